"""inputs.features: the schema columns the model reads (all categorical and continuous ones by default)."""
from __future__ import annotations

from specc.check.context import Context
from specc.schema import Column


def resolve_features(ctx: Context, task_targets: dict[str, str]) -> list[Column]:
    if ctx.spec.inputs.features is None:
        return _default_features(ctx, task_targets)
    chosen, seen = [], set()
    for j, name in enumerate(ctx.spec.inputs.features):
        path = f"$.inputs.features[{j}]"
        if name in seen:
            ctx.error(path, "duplicate_feature", f"feature {name!r} is listed twice", column=name)
            continue
        seen.add(name)
        col = ctx.column(name, path)
        if col is None:
            continue
        if name in task_targets:
            ctx.error(path, "target_leak", f"column {name!r} is the target of {task_targets[name][:-7]}; "
                      "as an input it would leak the answer", "remove it from inputs.features", name)
            continue
        if not (col.is_categorical or col.is_continuous):
            ctx.error(path, "not_a_feature",
                      f"column {name!r} is neither categorical nor continuous "
                      f"(tags: {', '.join(sorted(col.tags)) or 'none'})",
                      "tag it categorical or continuous in the schema", name)
            continue
        if col.is_categorical and not col.cardinality:
            ctx.error(path, "no_cardinality", f"categorical column {name!r} has no cardinality",
                      "give it int_domain {min: 0 max: N} in the schema", name)
            continue
        chosen.append(col)
    return chosen


def _default_features(ctx: Context, task_targets: dict[str, str]) -> list[Column]:
    chosen = [c for c in ctx.schema if (c.is_categorical or c.is_continuous)
              and c.name not in task_targets and not c.is_target]
    if not chosen:
        ctx.error("$.inputs.features", "no_features",
                  "the schema has no column tagged categorical or continuous to use as a feature",
                  "list the features in inputs.features")
    for col in chosen:
        if col.is_categorical and not col.cardinality:
            ctx.error("$.inputs.features", "no_cardinality",
                      f"categorical column {col.name!r} (a default feature) has no cardinality",
                      "give it int_domain {min: 0 max: N} in the schema, or list inputs.features without it",
                      col.name)
    return [c for c in chosen if not (c.is_categorical and not c.cardinality)]
