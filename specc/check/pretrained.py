"""inputs.pretrained: vectors per id of a categorical feature, read from a file and checked against the spec's
dim and the column's ids (coverage of the catalog, no NaN) — Transformers4Rec's PretrainedEmbeddingFeatures."""
from __future__ import annotations

from specc import spec as S
from specc.check.context import Context
from specc.plan import PretrainedPlan
from specc.schema import Column
from specc.vectors import VectorsProblem, read_table, resolve_path


def resolve_pretrained(ctx: Context, features: list[Column], item: Column | None) -> tuple[PretrainedPlan, ...]:
    plans = []
    for name, entry in ctx.spec.inputs.pretrained.items():
        at = f"$.inputs.pretrained.{name}"
        col = _keyed_column(ctx, entry, at, features, item)
        if col is None:
            continue
        plan = PretrainedPlan(name, entry.kind, entry.path, col.name, col.is_list, col.cardinality, entry.dim,
                              entry.trainable, entry.projection, entry.projection or entry.dim, entry.missing,
                              getattr(entry, "vectors", None), getattr(entry, "ids", None))
        if ctx.trial_run:   # a plan checked before (e.g. of a run directory) need not find the file again
            try:
                read_table(plan.kind, resolve_path(plan.path, ctx.spec.base_dir), plan.rows, plan.dim,
                           plan.vectors, plan.ids, plan.missing)
            except VectorsProblem as problem:
                ctx.error(f"{at}.{problem.key}", problem.code, problem.message, problem.hint, col.name)
        plans.append(plan)
    return tuple(plans)


def _keyed_column(ctx: Context, entry: S.PretrainedVectors, at: str, features: list[Column],
                  item: Column | None) -> Column | None:
    """The categorical feature whose ids pick the vectors (the item id unless `column` names another)."""
    by_name = {c.name: c for c in features if c.is_categorical}
    if entry.column is None:
        if any(t.kind == "next_item" for t in ctx.spec.tasks) and (item is None or item.name not in by_name):
            return None   # targets.py has reported the item column's problem
        if item is None or item.name not in by_name:
            ctx.error(at, "missing_item_feature", "pretrained vectors are keyed by the item id, which is not a "
                      "feature of this model", 'set "column" to the categorical feature whose ids key the vectors')
            return None
        return item
    col = ctx.column(entry.column, f"{at}.column")
    if col is not None and col.name not in by_name:
        ctx.error(f"{at}.column", "not_categorical", f"{col.name!r} is not a categorical feature of this model",
                  "pick a categorical column listed in inputs.features", col.name)
        return None
    return col
