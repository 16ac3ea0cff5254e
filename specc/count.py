"""Parameter counts from the Plan alone (a test checks them against every built model)."""
from __future__ import annotations

from specc.plan import Plan


def _linears(widths) -> int:
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def count_parameters(plan: Plan) -> int:
    i, b = plan.inputs, plan.body
    n = sum(t.rows * t.dim for t in i.tables)
    for p in i.pretrained:   # frozen vectors are a buffer, not parameters
        n += p.rows * p.dim * p.trainable + (_linears([p.dim, p.projection]) if p.projection else 0)
    c = i.continuous
    if c is not None and c.kind == "linear":
        n += _linears([len(c.columns), c.dim])
    elif c is not None and c.kind == "soft_embedding":
        n += len(c.columns) * c.cardinality * (2 + c.dim)
    if i.layer_norm:
        n += 2 * i.aggregated_width
    if i.projection is not None:
        n += _linears([i.projection.input_width, *i.projection.dims])
    if plan.masking.uses_mask_token:
        n += b.input_width
    n += _body_parameters(plan)
    for t in plan.tasks:
        if t.kind == "next_item":
            if t.output_projection:
                n += _linears(list(t.output_projection))
            if t.table is None:
                n += t.n_items * b.output_width
        else:
            n += b.output_width + 1
    if plan.masking.kind == "rtd":
        n += b.output_width + 1
    return n


def _body_parameters(plan: Plan) -> int:
    b = plan.body
    if b.kind == "mlp":
        return _linears([b.input_width, *b.dims])
    if b.kind == "gru":
        d = b.input_width
        return b.n_layer * 3 * (2 * d * d + 2 * d)
    if b.architecture == "native":
        d, ff = b.input_width, b.d_ff
        block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d)
        return b.max_positions * d + b.n_layer * block + 2 * d
    from specc.nn.xlnet import count_parameters as xlnet_count, runs_natively
    if runs_natively(b.architecture, b.config):
        return xlnet_count(b.config)
    from specc.nn.hf import count_parameters as hf_count
    return hf_count(b.config)
