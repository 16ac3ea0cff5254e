"""Plan -> specc.Model. Instantiates exactly what the plan says; decides no shape of its own."""
from __future__ import annotations

import torch
from torch import nn

from specc.check import compile as compile_plan
from specc.errors import Issue, SpecError, UserError
from specc.model import Model
from specc.nn.bodies import GruBody, MlpBody, NativeTransformer
from specc.nn.dropout import use_fast_dropout
from specc.nn.heads import NextItemHead, ScalarHead
from specc.nn.inputs import InputBlock, PretrainedVectors
from specc.plan import Plan, PretrainedPlan


def build(spec, schema=None, kernels: str = "auto") -> Model:
    """Compile `spec` against `schema` and build the model (schema optional when the spec names one)."""
    return build_from_plan(compile_plan(spec, schema, kernels))


def build_from_plan(plan: Plan, read_vectors: bool = True) -> Model:
    """`read_vectors=False` leaves pretrained vectors zero, for weights loaded next (e.g. from a run directory)."""
    try:
        return _build(plan, read_vectors)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "allocat" not in str(exc):
            raise
        raise UserError(f"the model's {plan.parameters:,} parameters ({plan.parameters * 4 / 2 ** 30:.1f} GiB in "
                        "fp32, before gradients and optimizer state) do not fit in memory: check the catalog sizes "
                        "(int_domain.max) and embedding dims in the plan (`specc compile`)") from None


def _build(plan: Plan, read_vectors: bool) -> Model:
    i = plan.inputs
    table_index = {t.name: n for n, t in enumerate(i.tables)}
    cat = [f for f in i.features if f.role == "categorical"]
    cont = i.continuous
    projection = None
    if i.projection is not None:
        p = i.projection
        projection = (p.input_width, list(p.dims), p.activation, p.dropout)
    inputs = InputBlock(
        tables=[(t.rows, t.dim) for t in i.tables],
        sequential=[(f.column, table_index[f.table]) for f in cat if f.sequential],
        context=[(f.column, table_index[f.table]) for f in cat if not f.sequential],
        continuous=list(cont.columns) if cont else [], continuous_kind=cont.kind if cont else None,
        continuous_dim=cont.dim if cont else 0, soft_cardinality=cont.cardinality if cont else None,
        aggregation=i.aggregation, item_column=plan.next_item.target if plan.next_item else i.sequence_column,
        aggregated_width=i.aggregated_width, layer_norm=i.layer_norm, dropout=i.dropout, projection=projection,
        pretrained=[(p.column, _pretrained(p, plan.base_dir, read_vectors)) for p in i.pretrained])
    body = _body(plan)
    next_item = None
    t = plan.next_item
    if t is not None:
        loss = t.loss
        next_item = NextItemHead(t.n_items, plan.body.output_width, t.output_projection, own_table=t.table is None,
                                 temperature=t.temperature, loss=loss.kind, label_smoothing=loss.label_smoothing,
                                 negatives=loss.negatives, sampler=loss.sampler, logq_correction=loss.logq_correction,
                                 t=loss.t)
    scalar_heads = {t.name: ScalarHead(plan.body.output_width, t.kind, t.summary)
                    for t in plan.tasks if t.kind != "next_item"}
    mask = nn.Parameter(torch.randn(plan.body.input_width) * 0.02) if plan.masking.uses_mask_token else None
    disc = nn.Linear(plan.body.output_width, 1) if plan.masking.kind == "rtd" else None
    return use_fast_dropout(Model(plan, inputs, body, next_item, scalar_heads, mask, disc))


def _pretrained(p: PretrainedPlan, base_dir: str | None, read_vectors: bool) -> PretrainedVectors:
    from specc.vectors import VectorsProblem, read_table, resolve_path
    vectors = torch.zeros(p.rows, p.dim)
    if read_vectors:
        try:
            vectors = torch.from_numpy(read_table(p.kind, resolve_path(p.path, base_dir), p.rows, p.dim, p.vectors,
                                                  p.ids, p.missing))
        except VectorsProblem as problem:   # the file changed since the spec was compiled
            raise SpecError([Issue(f"$.inputs.pretrained.{p.name}.{problem.key}", problem.code, problem.message,
                                   problem.hint, p.column)]) from None
    return PretrainedVectors(vectors, p.trainable, p.projection)


def _body(plan: Plan) -> nn.Module:
    b = plan.body
    if b.kind == "mlp":
        return MlpBody(b.input_width, list(b.dims), b.activation, b.dropout)
    if b.kind == "gru":
        return GruBody(b.input_width, b.n_layer, b.dropout)
    if b.architecture == "native":
        return NativeTransformer(b.input_width, b.n_head, b.n_layer, b.d_ff, b.dropout, b.max_positions, b.causal)
    from specc.nn.xlnet import XLNetBody, runs_natively
    if runs_natively(b.architecture, b.config):
        return XLNetBody(b.config, b.causal)
    from specc.nn.hf import HFTransformer
    return HFTransformer(b.config, b.causal)
