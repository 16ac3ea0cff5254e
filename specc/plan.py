"""The Plan: the resolved, pure-data form of a spec bound to a schema. Every shape is decided here."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

RTD_LOSS_NAME = "rtd_discriminator"   # the key of rtd masking's discriminator loss in Model(...)["losses"]


@dataclass(frozen=True)
class TablePlan:
    name: str
    columns: tuple[str, ...]
    rows: int
    dim: int


@dataclass(frozen=True)
class FeaturePlan:
    column: str
    role: str               # "categorical" or "continuous"
    sequential: bool        # a list column; scalars are broadcast along the sequence
    table: str | None       # embedding table of a categorical feature
    width: int              # width of its part in the aggregation (continuous "linear" shares one part)
    cardinality: int | None = None   # categorical: its ids lie in [0, cardinality) (a shared table may be larger)


@dataclass(frozen=True)
class ContinuousPlan:
    kind: str               # "linear", "soft_embedding" or "identity"
    columns: tuple[str, ...]
    dim: int                # width of each part ("linear": of the one shared part)
    cardinality: int | None = None   # soft_embedding only
    normalize: bool = False          # standardised (BatchNorm without affine) before the kind's transform


@dataclass(frozen=True)
class ProjectionPlan:
    kind: str               # "mlp" (from the spec) or "linear" (inserted to reach the body's width)
    input_width: int
    dims: tuple[int, ...]
    activation: str = "none"
    dropout: float = 0.0


@dataclass(frozen=True)
class PretrainedPlan:
    name: str
    kind: str               # the file's format: npy, safetensors or parquet
    path: str               # as the spec gives it; relative paths are relative to Plan.base_dir
    column: str             # the categorical feature whose ids pick the rows
    sequential: bool        # a list column (else a scalar, broadcast along the sequence)
    rows: int               # the column's cardinality
    dim: int
    trainable: bool         # False: a frozen buffer; True: a parameter
    projection: int | None  # width of the Linear from dim, if any
    width: int              # width of its part in the aggregation
    missing: str = "error"  # "zero": ids without a vector get zeros
    vectors: str | None = None   # the tensor (safetensors) or column (parquet) holding the vectors
    ids: str | None = None       # the tensor or column holding each vector's id


@dataclass(frozen=True)
class InputsPlan:
    max_sequence_length: int
    sequence_column: str    # the list column whose non-zero entries define each sequence's length
    features: tuple[FeaturePlan, ...]
    tables: tuple[TablePlan, ...]
    continuous: ContinuousPlan | None
    aggregation: str
    part_widths: tuple[int, ...]   # sequential categorical, scalar categorical, pretrained, continuous parts
    aggregated_width: int
    layer_norm: bool
    dropout: float
    projection: ProjectionPlan | None
    output_width: int
    pretrained: tuple[PretrainedPlan, ...] = ()


@dataclass(frozen=True)
class MaskingPlan:
    kind: str               # causal, mlm, plm, rtd, none
    probability: float = 0.0
    max_span_length: int = 0
    sample_from_batch: bool = False
    discriminator_weight: float = 0.0

    @property
    def uses_mask_token(self) -> bool:
        return self.kind in ("mlm", "plm", "rtd")


@dataclass(frozen=True)
class BodyPlan:
    kind: str               # transformer, hstu, gru, mlp
    architecture: str | None
    input_width: int
    output_width: int
    causal: bool            # the body never lets position t see positions after t
    n_head: int = 0
    n_layer: int = 0
    d_ff: int = 0
    dropout: float = 0.0
    dims: tuple[int, ...] = ()
    activation: str = "none"
    max_positions: int = 0
    config: dict[str, Any] = field(default_factory=dict)   # Hugging Face config keys, fully resolved
    time_column: str | None = None   # hstu: the list column of timestamps its time bias reads


@dataclass(frozen=True)
class LossPlan:
    kind: str
    label_smoothing: float = 0.0
    negatives: int = 0
    sampler: str | None = None
    logq_correction: bool = False
    t: float = 0.0


@dataclass(frozen=True)
class TaskPlan:
    name: str
    kind: str               # next_item, binary_classification, regression
    weight: float
    target: str
    metrics: dict[str, tuple[int, ...]] | tuple[str, ...]
    # next_item
    n_items: int = 0
    table: str | None = None               # the tied item table, or None for an own output table
    output_projection: tuple[int, int] | None = None   # (body width, item dim) Linear before tied scoring
    temperature: float = 1.0
    loss: LossPlan | None = None
    sampled: dict | None = None             # ranking metrics over the full catalog, or sampled (negatives, seed)
    # classification / regression
    summary: str | None = None
    target_sequential: bool = False   # always False (targets are scalar columns); kept so earlier runs' plan.json match


@dataclass(frozen=True)
class Plan:
    name: str
    inputs: InputsPlan
    masking: MaskingPlan
    body: BodyPlan
    tasks: tuple[TaskPlan, ...]
    parameters: int
    kernels: str            # "triton" or "torch" on the target device; "auto" decides at build time
    schema_source: str | None = None
    base_dir: str | None = None   # the spec's folder: relative file paths in the plan are relative to it

    @property
    def next_item(self) -> TaskPlan | None:
        return next((t for t in self.tasks if t.kind == "next_item"), None)

    def to_dict(self) -> dict:
        """The plan as JSON data; where the spec was read from (base_dir) is not part of it, and plans without
        pretrained vectors read as before those existed."""
        out = json.loads(json.dumps(asdict(self)))
        del out["base_dir"]
        if not self.inputs.pretrained:
            del out["inputs"]["pretrained"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        return _render(self)


def _fmt(n: int) -> str:
    return f"{n:,}"


def _table(rows: list[tuple], headers: tuple) -> list[str]:
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(cells[0]), "  " + "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]


def _render(plan: Plan) -> str:
    i, m, b = plan.inputs, plan.masking, plan.body
    kernels = "auto (Triton on CUDA, torch on CPU)" if plan.kernels == "auto" else plan.kernels
    out = [f"model {plan.name!r}: {_fmt(plan.parameters)} parameters, kernels {kernels}"
           + (f", schema {plan.schema_source}" if plan.schema_source else "")]
    out += ["", f"inputs (max_sequence_length {i.max_sequence_length}, lengths from {i.sequence_column!r})"]
    out += _table([(f.column, f.role, "list" if f.sequential else "scalar", f.table or "-", f.width)
                   for f in i.features], ("feature", "role", "shape", "table", "width"))
    if i.tables:
        out += ["", "embedding tables"]
        out += _table([(t.name, f"{_fmt(t.rows)} x {t.dim}", _fmt(t.rows * t.dim), ", ".join(t.columns))
                       for t in i.tables], ("table", "rows x dim", "parameters", "columns"))
    if i.pretrained:
        out += ["", "pretrained vectors"]
        out += _table([(p.name, p.column, f"{_fmt(p.rows)} x {p.dim}", "trainable" if p.trainable else "frozen",
                        f"linear {p.dim} -> {p.projection}" if p.projection else "-", p.width, f"{p.kind} {p.path}")
                       for p in i.pretrained], ("vectors", "by", "rows x dim", "weights", "projection", "width",
                                                "source"))
    if i.continuous:
        c = i.continuous
        extra = f", cardinality {c.cardinality}" if c.cardinality else ""
        extra += ", standardised" if c.normalize else ""
        out += ["", f"continuous: {c.kind} over {len(c.columns)} column(s) -> {c.dim} per part{extra}"]
    widths = " + ".join(str(w) for w in i.part_widths)
    out += ["", "widths",
            f"  aggregation {i.aggregation}: [{widths}] -> {i.aggregated_width}"
            + (", layer_norm" if i.layer_norm else "") + (f", dropout {i.dropout}" if i.dropout else "")]
    if i.projection:
        p = i.projection
        label = "inserted linear" if p.kind == "linear" else f"mlp ({p.activation})"
        out.append(f"  projection {label}: {p.input_width} -> {' -> '.join(map(str, p.dims))}")
    out.append(f"  body input: {b.input_width}")
    out += ["", f"masking: {m.kind}" + (f" (probability {m.probability:g})" if m.uses_mask_token else "")]
    if b.kind == "transformer":
        desc = (f"transformer {b.architecture}: d_model {b.input_width}, {b.n_head} heads, {b.n_layer} layers, "
                f"d_ff {b.d_ff}, dropout {b.dropout:g}")
    elif b.kind == "hstu":
        desc = (f"hstu: d_model {b.input_width}, {b.n_head} heads, {b.n_layer} layers, dropout {b.dropout:g}, "
                + (f"position and time bias (time from {b.time_column!r})" if b.time_column else "position bias"))
    elif b.kind == "gru":
        desc = f"gru: d_model {b.input_width}, {b.n_layer} layer(s), dropout {b.dropout:g}"
    else:
        desc = f"mlp: {b.input_width} -> {' -> '.join(map(str, b.dims))} ({b.activation})"
    out += [f"body: {desc}; {'causal' if b.causal else 'bidirectional'}; output {b.output_width}"]
    if b.config:   # what the Hugging Face model is built with (config overrides included)
        out += ["  config: " + ", ".join(f"{k}={v}" for k, v in b.config.items() if k != "model_type")]
    out += ["", "tasks"]
    rows = []
    for t in plan.tasks:
        if t.kind == "next_item":
            head = f"tied to {t.table}" if t.table else f"own table {_fmt(t.n_items)} x {b.output_width}"
            if t.output_projection:
                head = f"linear {t.output_projection[0]} -> {t.output_projection[1]}, " + head
            loss = t.loss.kind + (f" ({t.loss.negatives} negatives, {t.loss.sampler or 'uniform'})"
                                  if t.loss.negatives else "")
            metrics = ", ".join(f"{k}@{','.join(map(str, v))}" for k, v in t.metrics.items())
            if t.sampled:
                metrics += f" (sampled: {t.sampled['negatives']} negatives, seed {t.sampled['seed']})"
            rows.append((t.name, t.kind, t.target, f"{_fmt(t.n_items)} items, {head}", loss, metrics, t.weight))
        else:
            loss = "binary cross-entropy" if t.kind == "binary_classification" else "mse"
            rows.append((t.name, t.kind, t.target, f"summary {t.summary}", loss, ", ".join(t.metrics), t.weight))
    out += _table(rows, ("task", "kind", "target", "head", "loss", "metrics", "weight"))
    return "\n".join(out)
