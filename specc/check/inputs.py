"""inputs: the parts each position is made of (tables.py's embeddings, pretrained.py's vectors, continuous
features), how they are aggregated, and the projection to the body's width."""
from __future__ import annotations

from specc.check.context import Context
from specc.check.pretrained import resolve_pretrained
from specc.check.tables import resolve_tables
from specc.plan import ContinuousPlan, FeaturePlan, InputsPlan, ProjectionPlan
from specc.schema import Column


def resolve_inputs(ctx: Context, features: list[Column], item: Column | None) -> InputsPlan | None:
    spec = ctx.spec.inputs
    names = {c.name for c in features}
    categorical = [c for c in features if c.is_categorical]
    sequence = item if item is not None and item.name in names else next((c for c in categorical if c.is_list), None)
    if sequence is None and features:
        ctx.error("$.inputs.features", "no_sequence", "no categorical list feature: there is no sequence to model",
                  "add the item-id list column to inputs.features")
    tables, table_of = resolve_tables(ctx, features)
    pretrained = resolve_pretrained(ctx, features, item)
    continuous, cont_widths = _continuous(ctx, [c for c in features if not c.is_categorical])
    feature_plans = []
    for col in features:
        if col.is_categorical:
            t = table_of[col.name]
            width = tables[t].dim if t in tables else 0
            feature_plans.append(FeaturePlan(col.name, "categorical", col.is_list, t, width, col.cardinality))
        else:
            feature_plans.append(FeaturePlan(col.name, "continuous", col.is_list, None,
                                             continuous.dim if continuous else 0))
    # parts: sequential categorical, then scalar (context) categorical, each in feature order, then the pretrained
    # vectors in spec order, then continuous
    cat = [f for f in feature_plans if f.role == "categorical"]
    part_widths = tuple(f.width for f in cat if f.sequential) + tuple(f.width for f in cat if not f.sequential) \
        + tuple(p.width for p in pretrained) + tuple(cont_widths)
    item_width = tables[table_of[item.name]].dim if item is not None and item.name in names else None
    named = [(f.column, f.width) for f in cat] + [(p.name, p.width) for p in pretrained]
    others = [(f.column, f.width) for f in cat if item is None or f.column != item.name] + \
        [(p.name, p.width) for p in pretrained]
    width = _aggregated_width(ctx, part_widths, named, others, cont_widths, item_width)
    if sequence is None or not features:
        return None
    projection = _projection(ctx, width)
    return InputsPlan(spec.max_sequence_length, sequence.name, tuple(feature_plans), tuple(tables.values()),
                      continuous, spec.aggregation.kind, part_widths, width, spec.layer_norm, spec.dropout,
                      projection, projection.dims[-1] if projection else width, pretrained)


def _continuous(ctx: Context, columns: list[Column]) -> tuple[ContinuousPlan | None, list[int]]:
    """The continuous features' plan, and the width of each part they add."""
    if not columns:
        return None, []
    c = ctx.spec.inputs.continuous
    names = tuple(col.name for col in columns)
    if c.kind == "linear":
        return ContinuousPlan("linear", names, c.dim), [c.dim]
    if c.kind == "soft_embedding":
        return ContinuousPlan("soft_embedding", names, c.dim, c.cardinality), [c.dim] * len(columns)
    return ContinuousPlan("identity", names, 1), [1] * len(columns)


def _aggregated_width(ctx: Context, part_widths: tuple[int, ...], named: list[tuple[str, int]],
                      others: list[tuple[str, int]], cont_widths: list[int], item_width: int | None) -> int:
    """The aggregated width. `named`: (name, width) of the categorical and pretrained parts; `others`: those
    besides the item id's."""
    agg = ctx.spec.inputs.aggregation.kind
    if agg == "concat":
        return sum(part_widths)
    if agg == "sum":
        if len(set(part_widths)) > 1:
            ctx.error("$.inputs.aggregation", "shape_mismatch",
                      "sum aggregation needs parts of one width; got " + ", ".join(f"{n}={w}" for n, w in named)
                      + (f", continuous={cont_widths[0]}" if cont_widths else ""),
                      "set embeddings.default_dim (and continuous.dim) so all parts match, or use concat")
        return part_widths[0] if part_widths else 0
    if item_width is None:
        ctx.error("$.inputs.aggregation", "missing_item_feature",
                  "item_multiply needs the item-id column among the features")
        return part_widths[0] if part_widths else 0
    others = others + [("continuous", w) for w in cont_widths]
    if not others:
        ctx.error("$.inputs.aggregation", "shape_mismatch",
                  "item_multiply needs at least one feature besides the item id", "use concat")
    bad = [f"{n}={w}" for n, w in others if w != item_width]
    if bad:
        ctx.error("$.inputs.aggregation", "shape_mismatch",
                  f"item_multiply needs every other part as wide as the item embedding ({item_width}); got "
                  + ", ".join(bad), "set their dims to the item dim")
    return item_width


def _projection(ctx: Context, width: int) -> ProjectionPlan | None:
    """The spec's mlp projection (checked against the body's width), or a Linear inserted to reach it."""
    body, p = ctx.spec.body, ctx.spec.inputs.projection
    target = body.d_model if body.kind in ("transformer", "gru") else None
    if p is not None:
        if target is not None and p.dims[-1] != target:
            ctx.error("$.inputs.projection.dims", "shape_mismatch",
                      f"the projection ends at width {p.dims[-1]} but the body's d_model is {target}",
                      f"make the last projection dim {target}")
        return ProjectionPlan("mlp", width, tuple(p.dims), p.activation, p.dropout)
    if target is not None and width != target:
        return ProjectionPlan("linear", width, (target,))
    return None
