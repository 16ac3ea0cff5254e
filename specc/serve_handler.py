"""The backend side of `specc serve`: what a served model takes and returns (`Signature`), and the `Handler` that
validates each request Triton hands over and runs the graph (inside Triton's Python-backend stub).

A bad request (unknown or missing input, wrong dtype, ids outside the catalog, an empty or left-padded session,
non-finite values, inconsistent ragged offsets, unknown raw ids) raises BadRequest; only that request fails,
those batched with it are answered.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class BadRequest(Exception):
    """A request that the model cannot answer; its message goes back to the client."""


@dataclass(frozen=True)
class Signature:
    """What a served model takes and returns; written beside its graph for the backend stub."""
    name: str
    ragged: bool
    inputs: list        # [{"name", "dtype", "dims"}], as TensorSpec.to_dict
    outputs: list
    sequence_column: str
    list_columns: list
    scalar_columns: list
    id_ranges: dict     # categorical column -> its ids lie in [0, rows)
    max_batch_size: int
    threads: int = 1
    raw: dict = field(default_factory=dict)   # column or "item_ids" -> {"mapping", "dtype", "pad"} (specc.serve_ids)

    @classmethod
    def of(cls, name: str, module, max_batch_size: int, threads: int, raw: dict | None = None) -> Signature:
        raw = raw or {}
        return cls(name, module.ragged, _raw_dtypes([s.to_dict() for s in module.input_specs()], raw),
                   _raw_dtypes([s.to_dict() for s in module.output_specs()], raw), module.sequence_column,
                   list(module.list_columns), list(module.scalar_columns), dict(module.id_ranges), max_batch_size,
                   threads, raw)

    @property
    def output_names(self) -> list[str]:   # in the order the graph returns its outputs
        return [s["name"] for s in self.outputs]


def _raw_dtypes(specs: list[dict], raw: dict) -> list[dict]:
    """Tensor specs with the raw dtype of each raw column (`col`, or `col__values` in the ragged form)."""
    def column(name: str) -> str:
        return name[:-len("__values")] if name.endswith("__values") else name
    return [{**s, "dtype": raw[column(s["name"])]["dtype"]} if column(s["name"]) in raw else s for s in specs]


# ---------------------------------------------------------------------- requests

class Handler:
    """Validates requests and runs the graph for one input form (padded or ragged)."""

    def __init__(self, signature: Signature, graph, codec=None):
        self.signature = signature
        self.graph = graph
        self.codec = codec   # a specc.serve_ids.RawIds where the model takes raw ids
        self.specs = {s["name"]: s for s in signature.inputs}

    # --- validation
    def validate(self, request: dict) -> dict:
        """numpy request -> torch inputs for the graph, or BadRequest."""
        m = self.signature
        missing = sorted(set(self.specs) - set(request))
        extra = sorted(set(request) - set(self.specs))
        if missing or extra:
            problems = ([f"missing input(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected input(s) {', '.join(extra)}"] if extra else [])
            raise BadRequest("; ".join(problems) + f" (expected {', '.join(self.specs)})")
        arrays = {}
        for name, spec in self.specs.items():
            a = np.asarray(request[name])
            if a.dtype != np.dtype(spec["dtype"]):
                raise BadRequest(f"input {name!r} must be {spec['dtype']}, got {a.dtype}")
            if spec["dtype"].startswith("float") and a.size and not np.isfinite(a).all():
                raise BadRequest(f"input {name!r} has non-finite values")
            arrays[name] = a
        if m.ragged:
            return self._validate_ragged(arrays)
        seq = arrays[m.sequence_column]
        if seq.ndim != 2 or seq.shape[0] == 0 or seq.shape[1] == 0:
            raise BadRequest(f"input {m.sequence_column!r} must be [batch, length] with batch, length >= 1, "
                             f"got shape {list(seq.shape)}")
        B, L = seq.shape
        if B > m.max_batch_size:
            raise BadRequest(f"batch of {B} rows exceeds the maximum batch size {m.max_batch_size}")
        for c in m.list_columns:
            if arrays[c].shape != (B, L):
                raise BadRequest(f"input {c!r} has shape {list(arrays[c].shape)}, expected {[B, L]} "
                                 f"(like {m.sequence_column!r})")
        for c in m.scalar_columns:
            if arrays[c].reshape(-1).shape != (B,):
                raise BadRequest(f"input {c!r} has shape {list(arrays[c].shape)}, expected {[B, 1]}")
        if self.codec is not None:
            arrays = self.codec.encode(arrays, B)
            seq = arrays[m.sequence_column]
        self._check_sessions(seq != 0, m.sequence_column)
        self._check_ids(arrays)
        return _as_tensors(arrays)

    def _validate_ragged(self, arrays: dict) -> dict:
        m = self.signature
        B = None
        for c in m.list_columns:
            values, offsets = arrays[f"{c}__values"], arrays[f"{c}__offsets"]
            if values.ndim != 1 or offsets.ndim != 1 or offsets.shape[0] < 2:
                raise BadRequest(f"{c}__values must be [N] and {c}__offsets [batch + 1] with batch >= 1, got "
                                 f"{list(values.shape)} and {list(offsets.shape)}")
            if offsets[0] != 0 or offsets[-1] != values.shape[0] or (np.diff(offsets) < 0).any():
                raise BadRequest(f"{c}__offsets must start at 0, never decrease and end at len({c}__values) = "
                                 f"{values.shape[0]}")
            if B is not None and offsets.shape[0] - 1 != B:
                raise BadRequest(f"{c}__offsets describes {offsets.shape[0] - 1} rows, other columns {B}")
            B = offsets.shape[0] - 1
        assert B is not None
        if B > m.max_batch_size:
            raise BadRequest(f"batch of {B} rows exceeds the maximum batch size {m.max_batch_size}")
        for c in m.scalar_columns:
            if arrays[c].shape != (B,):
                raise BadRequest(f"input {c!r} has shape {list(arrays[c].shape)}, expected {[B]}")
        offsets = arrays[f"{m.sequence_column}__offsets"]
        values = arrays[f"{m.sequence_column}__values"]
        for c in m.list_columns:   # each list column holds one value per item of the sequence column
            if not np.array_equal(arrays[f"{c}__offsets"], offsets):
                raise BadRequest(f"{c}__offsets differ from {m.sequence_column}__offsets: every list column needs "
                                 "one value per item")
        lengths = np.diff(offsets)
        empty = np.flatnonzero(lengths == 0)
        if empty.size:
            raise BadRequest(f"empty session(s) in row(s) {rows_text(empty)}: every row needs at least one item")
        if self.codec is not None:
            arrays = self.codec.encode(arrays, B, offsets)
            values = arrays[f"{m.sequence_column}__values"]
        if (values == 0).any():
            raise BadRequest(f"{m.sequence_column}__values contains id 0 (padding); ragged values hold real items")
        self._check_ids({c: arrays[f"{c}__values"] if c in m.list_columns else arrays[c] for c in m.id_ranges})
        return _as_tensors(arrays)

    @staticmethod
    def _check_sessions(nonzero: np.ndarray, column: str) -> None:
        empty = np.flatnonzero(~nonzero.any(1))
        if empty.size:
            raise BadRequest(f"empty session(s) in row(s) {rows_text(empty)}: every row needs at least one item")
        gaps = np.flatnonzero((nonzero[:, 1:] & ~nonzero[:, :-1]).any(1))
        if gaps.size:
            raise BadRequest(f"{column!r} is not right-padded in row(s) {rows_text(gaps)}: items must come first, "
                             "then padding")

    def _check_ids(self, arrays: dict) -> None:
        for c, rows in self.signature.id_ranges.items():
            a = arrays[c]
            if a.size and (a.min() < 0 or a.max() >= rows):
                raise BadRequest(f"column {c!r} has ids outside the catalog [0, {rows}) "
                                 f"(min {int(a.min())}, max {int(a.max())})")

    # --- inference
    def run(self, inputs: dict) -> dict:
        import torch
        with torch.inference_mode():
            outputs = self.graph(inputs)
        outputs = {name: t.numpy() for name, t in zip(self.signature.output_names, outputs)}
        return outputs if self.codec is None else self.codec.decode(outputs)

    def __call__(self, requests: list[dict]) -> list:
        """The requests Triton batched together -> per request, its outputs or the BadRequest it raised."""
        results: list = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            try:
                good.append((i, self.validate(request)))
            except BadRequest as exc:
                results[i] = exc
        if self.signature.ragged:
            for i, inputs in good:
                results[i] = self.run(inputs)
            return results
        if good:
            merged = _merge([inputs for _, inputs in good], self.signature.list_columns)
            out = self.run(merged)
            start = 0
            for i, inputs in good:
                n = inputs[self.signature.sequence_column].shape[0]
                results[i] = {k: v[start:start + n] for k, v in out.items()}
                start += n
        return results


def _merge(batches: list[dict], list_columns: list[str]) -> dict:
    import torch
    import torch.nn.functional as F
    if len(batches) == 1:
        return batches[0]
    L = max(b[list_columns[0]].shape[1] for b in batches)
    out = {}
    for name in batches[0]:
        parts = [b[name] for b in batches]
        if name in list_columns:
            parts = [F.pad(p, (0, L - p.shape[1])) for p in parts]
        out[name] = torch.cat(parts)
    return out


def _as_tensors(arrays: dict) -> dict:
    """Zero-copy where numpy allows it; read-only or strided requests (kilobytes) are copied for torch."""
    import torch
    return {n: torch.from_numpy(a if a.flags.writeable and a.flags.c_contiguous else np.array(a))
            for n, a in arrays.items()}


def rows_text(idx: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:10])
    return shown + (f" (and {idx.size - 10} more)" if idx.size > 10 else "")
