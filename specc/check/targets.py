"""The columns the tasks predict: classification/regression targets, and the item-id column of next_item."""
from __future__ import annotations

from specc.check.context import Context
from specc.errors import did_you_mean
from specc.schema import Column


def task_targets(ctx: Context) -> dict[str, str]:
    """Columns that classification/regression tasks predict, with their JSON paths (they must never be inputs)."""
    targets = {}
    for i, task in enumerate(ctx.spec.tasks):
        if task.kind == "next_item":
            continue
        path = f"$.tasks[{i}].target"
        col = ctx.column(task.target, path)
        if col is None:
            continue
        targets[col.name] = path
        if col.is_list:
            _report_list_target(ctx, task.kind, col, path)
        elif not TARGET_FITS[task.kind](col):
            _report_wrong_target_type(ctx, task.kind, col, path)
    return targets


def _is_binary(col: Column) -> bool:
    return ("binary_classification" in col.tags or col.dtype == "bool"
            or (col.dtype == "int" and col.int_range is not None and col.int_range[0] >= 0
                and col.int_range[1] <= 1))


def _is_numeric(col: Column) -> bool:
    return col.dtype in ("float", "int") and not col.is_categorical


TARGET_FITS = {"binary_classification": _is_binary, "regression": _is_numeric}


def _report_list_target(ctx: Context, kind: str, col: Column, path: str) -> None:
    """A classification/regression task predicts one value per session, from a summary of the sequence; a list
    column holds one value per event."""
    ctx.error(path, "not_scalar",
              f"{kind} target {col.name!r} is a list column (one value per event); the task predicts one value "
              "per session", _scalar_target_hint(ctx, kind, col), col.name)


def _scalar_target_hint(ctx: Context, kind: str, col: Column) -> str:
    """The scalar columns that fit the task: the closest names, else those the schema tags with the task's kind."""
    fitting = [c for c in ctx.schema.columns if not c.is_list and TARGET_FITS[kind](c)]
    suggestion = did_you_mean(col.name, [c.name for c in fitting])
    tagged = [c.name for c in fitting if kind in c.tags]
    if suggestion is None and tagged:
        suggestion = f"the schema tags {', '.join(map(repr, tagged))} {kind}"
    return "use a scalar column (one value per session)" + (f"; {suggestion}" if suggestion else "")


def _report_wrong_target_type(ctx: Context, kind: str, col: Column, path: str) -> None:
    if kind == "binary_classification":
        ctx.error(path, "wrong_target_type",
                  f"column {col.name!r} is not a 0/1 column (tags: {', '.join(sorted(col.tags)) or 'none'})",
                  "tag it binary_classification or give it int_domain {min: 0 max: 1}", col.name)
    else:
        ctx.error(path, "wrong_target_type",
                  f"regression target {col.name!r} must be a numeric, non-categorical column",
                  "tag it regression or continuous", col.name)


def item_column(ctx: Context, features: list[Column]) -> Column | None:
    """The item-id column: the next_item target, else the item id among the features."""
    feature_names = {c.name for c in features}
    for i, task in enumerate(ctx.spec.tasks):
        if task.kind != "next_item":
            continue
        path = f"$.tasks[{i}].target"
        col = ctx.column(task.target, path) if task.target is not None else _find_item_column(ctx, path,
                                                                                               feature_names)
        if col is None:
            return None
        return col if _usable_item_column(ctx, col, path, feature_names) else None
    return next((c for c in features if c.is_item_id and c.is_list), None)


def _find_item_column(ctx: Context, path: str, feature_names: set[str]) -> Column | None:
    candidates = ctx.schema.item_id_columns()
    for narrower in ([c for c in candidates if c.is_list],            # a sequence to predict along
                     [c for c in candidates if c.name in feature_names]):
        if len(candidates) > 1 and len(narrower) == 1:
            candidates = narrower
    if not candidates:
        ctx.error(path, "missing_item_id", "the schema has no item-id column",
                  'tag one column item_id (or item and id), or set "target"')
        return None
    if len(candidates) > 1:
        ctx.error(path, "ambiguous_item_id", "several item-id columns: " + ", ".join(c.name for c in candidates),
                  'set "target" to one of them')
        return None
    return candidates[0]


def _usable_item_column(ctx: Context, col: Column, path: str, feature_names: set[str]) -> bool:
    if not col.is_categorical or col.dtype != "int":
        ctx.error(path, "not_categorical", f"item column {col.name!r} is not a categorical int column",
                  "tag it categorical", col.name)
    elif not col.cardinality:
        ctx.error(path, "no_cardinality", f"item column {col.name!r} has no cardinality",
                  "give it int_domain {min: 0 max: N} in the schema", col.name)
    elif not col.is_list:
        ctx.error(path, "not_sequential", f"item column {col.name!r} is not a list column",
                  "next-item prediction needs the item sequence (tag it list)", col.name)
    elif col.name not in feature_names and ctx.spec.inputs.features is not None:
        ctx.error("$.inputs.features", "missing_item_feature",
                  f"the next-item target {col.name!r} must also be an input feature",
                  f"add {col.name!r} to inputs.features", col.name)
    else:
        return True
    return False
