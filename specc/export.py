"""Serving artifacts: a traceable inference module over a trained run, and its export.

    specc export RUN_DIR --out DIR [--format torchscript|exported_program|onnx] [--k 20] [--exclude-seen]

`InferenceModel` wraps a loaded `specc.Model` for inference without Python control flow on the data:
it takes the schema's input columns as tensors and returns the top-k next items (`item_ids`, `scores`)
and the outputs of the other tasks (binary_classification -> probability, regression -> value), in
`output_names` order. Two input forms, fixed when the module is made:

  padded  list column `col` as [B, L] int64/float32 right-padded with 0 (any L; the most recent
          `max_sequence_length` items are kept), scalar column as [B] or [B, 1]
  ragged  list column as Merlin's `col__values` [N] and `col__offsets` [B + 1]; scalars as [B]

Its results equal `Model.recommend` (ids exactly, scores to float tolerance) on well-formed input. The
graph does not validate: ids outside a table are read as 0 (padding). `specc serve` validates each
request before it reaches the model and answers bad ones with a 400 error.

DIR/
  model.pt | model.pt2 | model.onnx   the padded-input model in the chosen format
  model_ragged.pt (torchscript only)  the ragged-input model
  signature.json                      inputs (name, dtype, dims) and outputs of both forms
  triton/<name>/config.pbtxt, 1/model.pt           padded inputs, batched (max_batch_size)
  triton/<name>_ragged/config.pbtxt, 1/model.pt    ragged inputs, unbatched
  (with --format onnx the padded Triton model is model.onnx on the onnxruntime backend)
"""
from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from specc.errors import UserError
from specc.model import keep_most_recent

FORMATS = ("torchscript", "exported_program", "onnx")
TOPK_BLOCK = 65536     # catalog block of the top-k scan; fixed so the graph does not depend on the batch size


class ExportError(UserError):
    """An export that cannot be made as asked (bad k, missing optional package, ...)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str           # numpy dtype name: "int64", "float32" ("object": strings, raw ids at `specc serve`)
    dims: Tuple[int, ...]  # per request row, without the batch dimension (-1: variable)

    @property
    def triton_dtype(self) -> str:
        return {"int64": "TYPE_INT64", "float32": "TYPE_FP32", "bool": "TYPE_BOOL", "object": "TYPE_STRING"}[self.dtype]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}


def _prepare_for_export(model) -> None:
    """No dropout; on CPU tensors the model runs the torch references, the traceable path."""
    model.eval()


class InferenceModel(nn.Module):
    """The traceable inference graph of a `specc.Model` (see the module docstring)."""

    def __init__(self, model, k: int = 20, exclude_seen: bool = False, ragged: bool = False,
                 block: int = TOPK_BLOCK):
        super().__init__()
        _prepare_for_export(model)
        self.model = model
        plan = model.plan
        self.ragged = ragged
        self.exclude_seen = exclude_seen
        self.block = block
        self.max_length = int(model.max_length)
        self.sequence_column = model.sequence_column
        self.list_columns: List[str] = list(model.list_columns)
        self.scalar_columns: List[str] = list(model.scalar_columns)
        self.id_ranges: Dict[str, int] = {c: int(r) for c, r in model.id_ranges.items()}
        self.continuous = {f.column for f in plan.inputs.features if f.role == "continuous"}
        self.has_next_item = model.next_item is not None
        if self.has_next_item:
            n_items = int(model._item_weight().shape[0])
            if not 1 <= k <= n_items - 1:
                raise ExportError(f"k must be between 1 and {n_items - 1} (the catalog without the padding id 0), "
                                  f"got {k}")
        self.k = int(k)
        self.head_names: List[str] = list(model.scalar_heads.keys())
        self.output_names: List[str] = (["item_ids", "scores"] if self.has_next_item else []) + self.head_names
        if len(set(self.output_names)) != len(self.output_names):
            raise ExportError(f"a task is named like an output ({', '.join(self.output_names)}); rename it")

    # ------------------------------------------------------------------ signature

    def input_specs(self) -> List[TensorSpec]:
        specs = []
        for c in self.list_columns:
            dt = "float32" if c in self.continuous else "int64"
            if self.ragged:
                specs += [TensorSpec(f"{c}__values", dt, (-1,)), TensorSpec(f"{c}__offsets", "int64", (-1,))]
            else:
                specs.append(TensorSpec(c, dt, (-1,)))
        for c in self.scalar_columns:
            specs.append(TensorSpec(c, "float32" if c in self.continuous else "int64", (-1,) if self.ragged else (1,)))
        return specs

    def output_specs(self) -> List[TensorSpec]:
        out = [TensorSpec("item_ids", "int64", (self.k,)), TensorSpec("scores", "float32", (self.k,))] \
            if self.has_next_item else []
        return out + [TensorSpec(n, "float32", (1,)) for n in self.head_names]

    def example_inputs(self, batch_size: int = 2, length: int | None = None) -> Dict[str, Tensor]:
        """A small well-formed batch (for tracing), padded or ragged like this module's inputs."""
        batch = self.model.random_batch(batch_size, length=length)
        if not self.ragged:
            return {c: v if c in self.list_columns else v[:, None] for c, v in batch.items()}
        lengths = (batch[self.sequence_column] != 0).sum(1)
        valid = torch.arange(batch[self.sequence_column].shape[1])[None] < lengths[:, None]
        out: Dict[str, Tensor] = {}
        for c, v in batch.items():
            if c in self.list_columns:
                out[f"{c}__values"] = v[valid]
                out[f"{c}__offsets"] = F.pad(lengths.cumsum(0), (1, 0))
            else:
                out[c] = v
        return out

    # ------------------------------------------------------------------ forward

    def forward(self, inputs: Dict[str, Tensor]) -> Tuple[Tensor, ...]:
        batch: Dict[str, Tensor] = {}
        M = self.max_length
        pos = torch.arange(M)
        if self.ragged:
            for c in self.list_columns:
                values, offsets = inputs[c + "__values"], inputs[c + "__offsets"].long()
                n = offsets[1:] - offsets[:-1]
                keep = n.clamp(min=0, max=M)
                idx = (offsets[1:] - keep)[:, None] + pos[None]
                padded_values = F.pad(values, (0, 1))
                idx = idx.clamp(min=0, max=values.shape[0])
                batch[c] = padded_values[idx] * (pos[None] < keep[:, None]).to(values.dtype)
            lengths = (batch[self.sequence_column] != 0).sum(1)
            history = self._ragged_history(inputs) if self.exclude_seen else batch[self.sequence_column]
        else:
            history = inputs[self.sequence_column]
            lengths = (history != 0).sum(1)
            for c in self.list_columns:
                batch[c] = keep_most_recent(inputs[c], lengths, M)
            lengths = lengths.clamp(max=M)
        for c in self.scalar_columns:
            batch[c] = inputs[c].reshape(-1)
        for c, rows in self.id_ranges.items():   # out-of-range ids read as padding (serve rejects them first)
            v = batch[c]
            batch[c] = torch.where((v >= 0) & (v < rows), v, torch.zeros_like(v))
        outputs: List[Tensor] = []
        if self.has_next_item:
            rows = self.id_ranges.get(self.sequence_column)
            if self.exclude_seen and rows is not None:   # as the inputs: out-of-range ids read as padding
                history = torch.where((history >= 0) & (history < rows), history, torch.zeros_like(history))
            scores, ids = self._topk(batch, lengths, history)
            outputs += [ids, scores]
        if self.head_names:
            hidden = self.model.encode(batch, lengths)
            for name in self.head_names:
                head = self.model.scalar_heads[name]
                outputs.append(head.predict(head(hidden, lengths)).float()[:, None])
        return tuple(outputs)

    def _ragged_history(self, inputs: Dict[str, Tensor]) -> Tensor:
        """[B, N] every item of each row (0-padded), N the request's value count: what exclude_seen excludes."""
        values = inputs[self.sequence_column + "__values"]
        offsets = inputs[self.sequence_column + "__offsets"].long()
        every = torch.arange(values.shape[0])
        idx = (offsets[:-1][:, None] + every[None]).clamp(min=0, max=values.shape[0])
        inside = every[None] < (offsets[1:] - offsets[:-1])[:, None]
        return F.pad(values, (0, 1))[idx] * inside.to(values.dtype)

    def _topk(self, batch: Dict[str, Tensor], lengths: Tensor, history: Tensor) -> Tuple[Tensor, Tensor]:
        from specc.kernels.topk_scores import topk_scores_reference
        m = self.model
        h = m.next_hidden(batch, lengths)
        # id 0 (padding) is always excluded; with exclude_seen, every id of the row's whole history as well (the
        # model reads only its last max_sequence_length items)
        exclude = F.pad(history, (0, 1)) if self.exclude_seen else torch.zeros_like(history[:, :1])
        q = m.next_item.queries(h) / m.next_item.temperature
        return topk_scores_reference(q, m._item_weight(), self.k, exclude, block=self.block)


# ---------------------------------------------------------------------- export

def model_name(model) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", getattr(model.plan, "name", None) or "specc")
    return name or "specc"


def trace(module: InferenceModel) -> torch.jit.ScriptModule:
    example = module.example_inputs()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)   # third-party bodies' deprecation notices
        return torch.jit.trace(module, (example,), strict=False, check_trace=False)


def export_program(module: InferenceModel):
    from torch.export import Dim, export
    example = module.example_inputs(batch_size=3, length=module.max_length + 2)
    batch = Dim("batch", min=1, max=1 << 16)
    shapes = {}
    for spec in module.input_specs():
        if spec.dims == (-1,) and not module.ragged:
            shapes[spec.name] = {0: batch, 1: Dim(f"L_{len(shapes)}", min=1, max=1 << 16)}
        else:
            shapes[spec.name] = {0: batch}
    # every list column shares the sequence length of the sequence column
    seq_dim = shapes[module.sequence_column][1]
    for c in module.list_columns:
        shapes[c] = {0: batch, 1: seq_dim}
    with torch.no_grad():
        return export(module, (example,), dynamic_shapes={"inputs": shapes}, strict=False)


def _onnx_export(module: InferenceModel, path: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("--format onnx needs the onnx extra: pip install 'specc[onnx]'") from None
    example = module.example_inputs()
    names = [s.name for s in module.input_specs()]
    axes = {n: {0: "batch", 1: "length"} for n in module.list_columns}
    axes.update({n: {0: "batch"} for n in module.scalar_columns})
    axes.update({n: {0: "batch"} for n in module.output_names})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")   # tracer warnings on shapes that are constants of the model
        torch.onnx.export(module, (example, {}), str(path), input_names=names, output_names=module.output_names,
                          dynamic_axes=axes, dynamo=False)


def triton_config(name: str, inputs: List[TensorSpec], outputs: List[TensorSpec], max_batch_size: int,
                  platform: str = "pytorch_libtorch", output_suffix: bool = True, max_queue_delay_us: int = 0) -> str:
    """A Triton model config (protobuf text). With max_batch_size 0 the dims are the full shapes.

    platform "python" names Triton's Python backend (what `specc serve` runs). The PyTorch backend maps a
    single Dict[str, Tensor] forward argument to the inputs by name, and the outputs of the returned tuple by
    the `<name>__<index>` convention (output_suffix)."""
    def dims(spec: TensorSpec, kind: str) -> str:
        d = (-1,) + spec.dims if kind == "output" and max_batch_size == 0 else spec.dims
        return ", ".join(str(x) for x in d)
    engine = 'backend: "python"' if platform == "python" else f'platform: "{platform}"'
    lines = [f'name: "{name}"', engine, f"max_batch_size: {max_batch_size}"]
    for kind, specs in (("input", inputs), ("output", outputs)):
        lines.append(f"{kind} [")
        for i, s in enumerate(specs):
            tname = f"{s.name}__{i}" if kind == "output" and output_suffix else s.name
            lines += ["  {", f'    name: "{tname}"', f"    data_type: {s.triton_dtype}",
                      f"    dims: [ {dims(s, kind)} ]", "  }" + ("," if i < len(specs) - 1 else "")]
        lines.append("]")
    if max_batch_size > 0:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}")
    lines.append("instance_group [ { kind: KIND_CPU count: 1 } ]")
    return "\n".join(lines) + "\n"


def export(run_dir, out, format: str = "torchscript", k: int = 20, exclude_seen: bool = False,
           max_batch_size: int = 64, log=print) -> Path:
    """Write the serving artifacts of a run directory to `out` (see the module docstring)."""
    import specc
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    model = specc.load(run_dir, device="cpu")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    padded = InferenceModel(model, k=k, exclude_seen=exclude_seen)
    ragged = InferenceModel(model, k=k, exclude_seen=exclude_seen, ragged=True)
    name = model_name(model)
    repo = out / "triton"
    if repo.exists():
        shutil.rmtree(repo)
    models = ((name, padded, max_batch_size), (f"{name}_ragged", ragged, 0))
    try:   # a third-party body may hold Python calls that graphs cannot record (Bloom's GeLU, ...)
        for mname, module, _ in models:   # the Triton repository holds TorchScript, but for an ONNX padded model
            (repo / mname / "1").mkdir(parents=True)
            if not (format == "onnx" and module is padded):
                trace(module).save(str(repo / mname / "1" / "model.pt"))
        if format == "torchscript":
            shutil.copy(repo / name / "1" / "model.pt", out / "model.pt")
            shutil.copy(repo / f"{name}_ragged" / "1" / "model.pt", out / "model_ragged.pt")
        elif format == "exported_program":
            torch.export.save(export_program(padded), str(out / "model.pt2"))
        else:
            _onnx_export(padded, out / "model.onnx")
            shutil.copy(out / "model.onnx", repo / name / "1" / "model.onnx")
    except (ExportError, OSError):
        raise
    except Exception as exc:   # noqa: BLE001 - tracing/exporting third-party modules raises anything
        body = model.plan.body
        raise ExportError(f"the {body.architecture or body.kind} body cannot be exported as {format} "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); the run still works from "
                          "Python (specc.load) and the CLI") from None
    signature = {"name": name, "k": padded.k, "exclude_seen": exclude_seen, "format": format,
                 "max_sequence_length": padded.max_length,
                 "padded": {"inputs": [s.to_dict() for s in padded.input_specs()],
                            "outputs": [s.to_dict() for s in padded.output_specs()]},
                 "ragged": {"inputs": [s.to_dict() for s in ragged.input_specs()],
                            "outputs": [s.to_dict() for s in ragged.output_specs()]}}
    (out / "signature.json").write_text(json.dumps(signature, indent=2))
    for mname, module, mbs in models:
        onnx = format == "onnx" and module is padded
        cfg = triton_config(mname, module.input_specs(), module.output_specs(), mbs,
                            "onnxruntime_onnx" if onnx else "pytorch_libtorch", output_suffix=not onnx)
        (repo / mname / "config.pbtxt").write_text(cfg)
    log(f"exported {name} ({format}, k={padded.k}) to {out}; Triton model repository: {repo}")
    return out
