"""`specc serve RUN_DIR`: a trained run behind Triton Inference Server.

Two models, both KServe-v2 over HTTP (--port) and gRPC (--grpc-port, default port + 1), Prometheus metrics
on --metrics-port (default port + 2), health at /v2/health/ready and /v2/models/<name>/ready:

  <name>          padded inputs (list column `col` as [B, L] right-padded with 0, scalars [B, 1]);
                  dynamic batching up to --max-batch-size rows
  <name>_ragged   Merlin's ragged form (`col__values` [N], `col__offsets` [B + 1]; scalars [B]); unbatched

Outputs: `item_ids` and `scores` [B, k] of the top-k next items (never id 0), and one [B, 1] output per other
task (binary_classification: probability, regression: value). Results equal `specc.load(RUN_DIR).recommend`.

Every request is validated before it reaches the model; a bad one (declared shapes or a size out of bounds,
malformed JSON data — caught by the guard, `specc/serve_guard.py`; unknown or missing column, wrong dtype,
an oversized batch — caught by Triton; ids outside the catalog, an empty or left-padded session, non-finite
values, inconsistent ragged offsets — caught by `Handler` in the backend stub) is answered with HTTP 400 /
gRPC INVALID_ARGUMENT and a one-line message, and only that request fails: requests batched with it are
answered normally.

How it runs: `serve` traces the two inference graphs, writes them into a Triton model repository as
Python-backend models (`specc/triton_model.py`), opens the public ports with the guard and starts the
tritonserver that nvidia-pytriton ships (the `serve` extra) on private loopback ports under a supervisor
(`specc/serve_supervisor.py`: restarts after a crash, truthful health, bounded retries). The graphs run
inside Triton's Python-backend stub (tritonserver <-> stub over shared memory). SIGTERM (and SIGINT) stop
the guard, tritonserver and its stubs, and remove the workspace.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from specc.serve_supervisor import RestartPolicy, Supervisor
from specc.serve_workspace import ServeError, check_port_free, make_workspace, remove_stale_shm_regions


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

    @classmethod
    def of(cls, name: str, module, max_batch_size: int, threads: int) -> Signature:
        return cls(name, module.ragged, [s.to_dict() for s in module.input_specs()],
                   [s.to_dict() for s in module.output_specs()], module.sequence_column, list(module.list_columns),
                   list(module.scalar_columns), dict(module.id_ranges), max_batch_size, threads)

    @property
    def output_names(self) -> list[str]:   # in the order the graph returns its outputs
        return [s["name"] for s in self.outputs]


# ---------------------------------------------------------------------- requests

class Handler:
    """Validates requests and runs the graph for one input form (padded or ragged)."""

    def __init__(self, signature: Signature, graph):
        self.signature = signature
        self.graph = graph
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
            raise BadRequest(f"empty session(s) in row(s) {_rows(empty)}: every row needs at least one item")
        if (values == 0).any():
            raise BadRequest(f"{m.sequence_column}__values contains id 0 (padding); ragged values hold real items")
        self._check_ids({c: arrays[f"{c}__values"] if c in m.list_columns else arrays[c] for c in m.id_ranges})
        return _as_tensors(arrays)

    @staticmethod
    def _check_sessions(nonzero: np.ndarray, column: str) -> None:
        empty = np.flatnonzero(~nonzero.any(1))
        if empty.size:
            raise BadRequest(f"empty session(s) in row(s) {_rows(empty)}: every row needs at least one item")
        gaps = np.flatnonzero((nonzero[:, 1:] & ~nonzero[:, :-1]).any(1))
        if gaps.size:
            raise BadRequest(f"{column!r} is not right-padded in row(s) {_rows(gaps)}: items must come first, "
                             "then zeros")

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
        return {name: t.numpy() for name, t in zip(self.signature.output_names, outputs)}

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


def _rows(idx: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:10])
    return shown + (f" (and {idx.size - 10} more)" if idx.size > 10 else "")


# ---------------------------------------------------------------------- the model repository

_MODEL_PY = "from specc.triton_model import TritonPythonModel  # noqa: F401  (written by specc serve)\n"


def write_repository(run_dir, repo: Path, k: int = 20, exclude_seen: bool = False, max_batch_size: int = 64,
                     max_queue_delay_us: int = 0, threads: int = 1) -> list[str]:
    """Trace the run's padded and ragged graphs into a Triton repository of Python-backend models; their names."""
    import specc
    from specc.export import InferenceModel, model_name, trace, triton_config
    model = specc.load(run_dir, device="cpu")
    name = model_name(model)
    padded = InferenceModel(model, k=k, exclude_seen=exclude_seen)
    ragged = InferenceModel(model, k=k, exclude_seen=exclude_seen, ragged=True)
    for mname, module, batch in ((name, padded, max_batch_size), (f"{name}_ragged", ragged, 0)):
        version = repo / mname / "1"
        version.mkdir(parents=True)
        signature = Signature.of(mname, module, max_batch_size, threads)
        try:
            graph = trace(module)
        except Exception as exc:   # noqa: BLE001 - a third-party body may hold calls a graph cannot record
            body = model.plan.body
            raise ServeError(f"the {body.architecture or body.kind} body cannot be traced for serving "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); the run still works "
                             "from Python (specc.load) and the CLI") from None
        graph.save(str(version / "graph.pt"))
        (version / "signature.json").write_text(json.dumps(asdict(signature), indent=2))
        (version / "model.py").write_text(_MODEL_PY)
        (repo / mname / "config.pbtxt").write_text(triton_config(mname, module.input_specs(), module.output_specs(),
                                                                 batch, "python", False, max_queue_delay_us))
    return [name, f"{name}_ragged"]


# ---------------------------------------------------------------------- the server

def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, grpc_port: int | None = None,
          metrics_port: int | None = None, max_batch_size: int = 64, k: int = 20, exclude_seen: bool = False,
          max_queue_delay_us: int = 0, threads: int | None = None, log_fn=print, ready_timeout: float = 300,
          max_request_mb: int = 64, restart: RestartPolicy = RestartPolicy()) -> None:
    """Serve a run directory until SIGTERM/SIGINT (blocks).

    `threads`: torch threads per model, by default half the cores: on a small machine the model must not
    compete with tritonserver's own threads for the cores (torch's idle workers spin)."""
    grpc_port = port + 1 if grpc_port is None else grpc_port
    metrics_port = port + 2 if metrics_port is None else metrics_port
    if len({port, grpc_port, metrics_port}) < 3:
        raise ServeError(f"HTTP, gRPC and metrics need three different ports (got {port}, {grpc_port}, {metrics_port})")
    for p in (port, grpc_port, metrics_port):
        if not 0 < p < 65536:
            raise ServeError(f"port {p} is out of range (HTTP {port}, gRPC {grpc_port}, metrics {metrics_port}): "
                             "pick a lower --port or set --grpc-port and --metrics-port")
        check_port_free(host, p)
    threads = threads or max(1, (os.cpu_count() or 2) // 2)
    stop = {"signal": None}

    def request_stop(signum, frame):
        stop["signal"] = signum
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    remove_stale_shm_regions()
    workspace = make_workspace()
    guard = supervisor = None
    try:
        supervisor = Supervisor(workspace, host, metrics_port, stop, log_fn, ready_timeout, restart)
        from specc.serve_guard import Guard   # the serve extra is there (Supervisor checked it)
        guard = Guard(supervisor.upstream, host, port, grpc_port, max_request_mb << 20)
        try:
            guard.start()   # health answers "not ready" from now on, until tritonserver is
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port} or {host}:{grpc_port} ({exc})") from None
        names = write_repository(run_dir, workspace / "models", k, exclude_seen, max_batch_size, max_queue_delay_us,
                                 threads)
        supervisor.run(names, f"serving {names[0]} (k={k}) and {names[1]}: HTTP http://{host}:{port}, gRPC "
                              f"{host}:{grpc_port}, metrics http://{host}:{metrics_port}/metrics; pid {os.getpid()}")
        if stop["signal"] is not None:
            log_fn(f"stopping ({signal.Signals(stop['signal']).name})")
    finally:
        if supervisor is not None:
            supervisor.close()
        if guard is not None:
            guard.stop()
        shutil.rmtree(workspace, ignore_errors=True)
        remove_stale_shm_regions()
