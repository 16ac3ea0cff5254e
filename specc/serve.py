"""`specc serve RUN_DIR`: a trained run behind Triton Inference Server, through PyTriton.

Two models, both KServe-v2 over HTTP (--port) and gRPC (--grpc-port, default port + 1), Prometheus metrics
on --metrics-port (default port + 2), health at /v2/health/ready and /v2/models/<name>/ready:

  <name>          padded inputs (list column `col` as [B, L] right-padded with 0, scalars [B, 1]);
                  dynamic batching up to --max-batch-size rows
  <name>_ragged   Merlin's ragged form (`col__values` [N], `col__offsets` [B + 1]; scalars [B]); unbatched

Outputs: `item_ids` and `scores` [B, k] of the top-k next items (never id 0), and one [B, 1] output per other
task (binary_classification: probability, regression: value). Results equal `specc.load(RUN_DIR).recommend`.

Every request is validated before it reaches the model; a bad one (unknown or missing column, wrong dtype,
an oversized batch — all caught by Triton itself — ids outside the catalog, an empty or left-padded session,
non-finite values, inconsistent ragged offsets) is answered with HTTP 400 / gRPC INVALID_ARGUMENT and a
one-line message, and only that request fails: requests batched with it are answered normally.

Process notes: Triton's Python-backend stub loads libpython dynamically; the interpreter's own LIBDIR
must come first on LD_LIBRARY_PATH or the stub picks a system libpython of another patch version. `serve`
re-executes itself with it set. SIGTERM (and SIGINT) stop the server and its stub cleanly.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import sysconfig
from pathlib import Path

import numpy as np

from specc.errors import UserError

ERROR_KEY = "__specc_error__"
_REEXEC_FLAG = "SPECC_SERVE_LIBPYTHON"
# PyTriton copies its proxy model.py into Triton's model repository; this makes a response that carries
# ERROR_KEY a per-request INVALID_ARG error (HTTP 400) instead of data. Checked against nvidia-pytriton 0.7.
_ANCHOR = ("def _wrap_response(response: Response, requested_outputs_names, model_outputs_dict):\n"
           "    if response.data is not None:\n")
_PATCH = _ANCHOR + (
    f"        if {ERROR_KEY!r} in response.data:\n"
    "            return pb_utils.InferenceResponse(error=pb_utils.TritonError(\n"
    f"                bytes(response.data[{ERROR_KEY!r}]).decode('utf-8', 'replace'),\n"
    "                pb_utils.TritonError.INVALID_ARG))\n")

log = logging.getLogger("specc.serve")


class ServeError(UserError):
    """The server cannot start as asked (missing extra, bad run directory, port in use, ...)."""


class BadRequest(Exception):
    """A request that the model cannot answer; its message goes back to the client."""


# ---------------------------------------------------------------------- launching

def libpython_env(env: dict | None = None) -> dict:
    """`env` with this interpreter's LIBDIR first on LD_LIBRARY_PATH (for Triton's Python-backend stub)."""
    env = dict(os.environ if env is None else env)
    libdir = sysconfig.get_config_var("LIBDIR")
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and (not parts or parts[0] != libdir):
        env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir] + [p for p in parts if p != libdir])
    return env


def _needs_reexec() -> bool:
    libdir = sysconfig.get_config_var("LIBDIR")
    first = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)[0]
    return bool(libdir) and first != libdir and os.environ.get(_REEXEC_FLAG) != "1"


def reexec_if_needed(cli_args: list[str]) -> None:
    """Replace this process by `python -m specc.cli serve ...` with the right LD_LIBRARY_PATH (same PID)."""
    if not _needs_reexec():
        return
    env = libpython_env()
    env[_REEXEC_FLAG] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "specc.cli", "serve", *cli_args], env)


def _patch_pytriton_errors() -> bool:
    """Make PyTriton's generated proxy model answer ERROR_KEY responses with a per-request 400."""
    from pytriton.models import model as pt_model
    original = pt_model.Model.generate_model
    if getattr(original, "_specc_patched", False):
        return True
    source = (Path(pt_model.__file__).parent.parent / "proxy" / "model.py").read_text()
    if _ANCHOR not in source:
        log.warning("nvidia-pytriton's proxy model changed; bad requests get HTTP 500 instead of 400")
        return False

    original_files = pt_model.Model.get_proxy_model_files

    def generate_model(self, model_repository):   # a local model store
        original(self, model_repository)
        path = Path(model_repository) / self.model_name / str(self.model_version) / "model.py"
        path.write_text(path.read_text().replace(_ANCHOR, _PATCH, 1))

    def get_proxy_model_files(self):               # files sent with the load request (PyTriton's default)
        files = original_files(self)
        key = f"file:{self.model_version}/model.py"
        if key in files:
            files[key] = files[key].decode("utf-8").replace(_ANCHOR, _PATCH, 1).encode("utf-8")
        return files

    generate_model._specc_patched = True
    pt_model.Model.generate_model = generate_model
    pt_model.Model.get_proxy_model_files = get_proxy_model_files
    return True


# ---------------------------------------------------------------------- requests

class Handler:
    """Validates requests and runs the model for one input form (padded or ragged)."""

    def __init__(self, module, max_batch_size: int, per_request_errors: bool = True, graph=None):
        self.module = module
        self.graph = graph if graph is not None else module   # what runs: the traced graph, or the module
        self.max_batch_size = max_batch_size
        self.per_request_errors = per_request_errors
        self.specs = {s.name: s for s in module.input_specs()}

    # --- validation
    def validate(self, request) -> dict:
        """numpy request -> torch inputs for the module, or BadRequest."""
        m = self.module
        names = set(request.keys()) if hasattr(request, "keys") else set(request)
        missing = sorted(set(self.specs) - names)
        extra = sorted(names - set(self.specs))
        if missing or extra:
            raise BadRequest("; ".join(
                ([f"missing input(s) {', '.join(missing)}"] if missing else [])
                + ([f"unexpected input(s) {', '.join(extra)}"] if extra else [])) + f" (expected {', '.join(self.specs)})")
        arrays = {}
        for name, spec in self.specs.items():
            a = np.asarray(request[name])
            if a.dtype != np.dtype(spec.dtype):
                raise BadRequest(f"input {name!r} must be {spec.dtype}, got {a.dtype}")
            if spec.dtype.startswith("float") and a.size and not np.isfinite(a).all():
                raise BadRequest(f"input {name!r} has non-finite values")
            arrays[name] = a
        if m.ragged:
            return self._validate_ragged(arrays)
        seq = arrays[m.sequence_column]
        if seq.ndim != 2 or seq.shape[0] == 0 or seq.shape[1] == 0:
            raise BadRequest(f"input {m.sequence_column!r} must be [batch, length] with batch, length >= 1, "
                             f"got shape {list(seq.shape)}")
        B, L = seq.shape
        if B > self.max_batch_size:
            raise BadRequest(f"batch of {B} rows exceeds the maximum batch size {self.max_batch_size}")
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
        m = self.module
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
        if B > self.max_batch_size:
            raise BadRequest(f"batch of {B} rows exceeds the maximum batch size {self.max_batch_size}")
        for c in m.scalar_columns:
            if arrays[c].shape != (B,):
                raise BadRequest(f"input {c!r} has shape {list(arrays[c].shape)}, expected {[B]}")
        offsets = arrays[f"{m.sequence_column}__offsets"]
        values = arrays[f"{m.sequence_column}__values"]
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
        for c, rows in self.module.id_ranges.items():
            a = arrays[c]
            if a.size and (a.min() < 0 or a.max() >= rows):
                raise BadRequest(f"column {c!r} has ids outside the catalog [0, {rows}) "
                                 f"(min {int(a.min())}, max {int(a.max())})")

    # --- inference
    def run(self, inputs: dict) -> dict:
        import torch
        with torch.inference_mode():
            outputs = self.graph(inputs)
        return {name: t.numpy() for name, t in zip(self.module.output_names, outputs)}

    def __call__(self, requests):
        """PyTriton callable: a list of requests (those Triton batched together) -> a list of responses."""
        results: list = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            try:
                good.append((i, self.validate(request)))
            except BadRequest as exc:
                if not self.per_request_errors:
                    raise
                results[i] = {ERROR_KEY: np.frombuffer(str(exc).encode("utf-8"), dtype=np.uint8).copy()}
        if self.module.ragged:
            for i, inputs in good:
                results[i] = self.run(inputs)
            return results
        if good:
            merged = _merge([inputs for _, inputs in good], self.module.list_columns)
            out = self.run(merged)
            start = 0
            for i, inputs in good:
                n = inputs[self.module.sequence_column].shape[0]
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
    """Zero-copy where numpy allows it; requests decoded from a message arrive read-only, and torch wants
    writable memory, so those (kilobytes) are copied."""
    import torch
    return {n: torch.from_numpy(a if a.flags.writeable and a.flags.c_contiguous else np.array(a))
            for n, a in arrays.items()}


def _rows(idx: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:10])
    return shown + (f" (and {idx.size - 10} more)" if idx.size > 10 else "")


# ---------------------------------------------------------------------- server

def build_handlers(run_dir, k: int = 20, exclude_seen: bool = False, max_batch_size: int = 64,
                   per_request_errors: bool = True):
    """The padded and ragged handlers. They run the traced graphs that `specc export` writes: one call into
    TorchScript releases the GIL for the whole forward, where eager PyTorch re-takes it after every op and
    queues behind PyTriton's own threads (measured on 2 cores, batch 32: ~2 ms less per request)."""
    import specc
    import torch
    from specc.export import InferenceModel, model_name, trace
    torch.set_grad_enabled(False)
    model = specc.load(run_dir, device="cpu")
    padded = InferenceModel(model, k=k, exclude_seen=exclude_seen)
    ragged = InferenceModel(model, k=k, exclude_seen=exclude_seen, ragged=True)
    name = model_name(model)
    return name, *(Handler(m, max_batch_size, per_request_errors, graph=trace(m)) for m in (padded, ragged))


def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, grpc_port: int | None = None,
          metrics_port: int | None = None, max_batch_size: int = 64, k: int = 20, exclude_seen: bool = False,
          max_queue_delay_us: int = 0, threads: int | None = None, log_fn=print) -> None:
    """Serve a run directory until SIGTERM/SIGINT (blocks).

    `threads`: torch threads for the model, by default half the cores: on a small machine the model must not
    compete with tritonserver's own threads (measured on 2 cores: model call 4.7 ms with 2 threads inside the
    server, against 2.2 ms in a quiet process)."""
    import torch

    from specc.cpu import keep_freed_memory
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) // 2))
    keep_freed_memory()   # requests allocate the same tensors again and again: no unmap/page-fault cycle
    # Tensors go between tritonserver's Python stub and this process inline (base64 in the ZeroMQ message)
    # instead of through PyTriton's shared-memory store, whose every put and release is a round trip to a
    # multiprocessing manager: recommendation requests are kilobytes, and on 2 cores that store cost ~1.1 ms of
    # a batch-1 request (p50 4.9 -> 3.8 ms, mean of four interleaved A/B runs). Exporting
    # PYTRITON_NO_TENSORSTORE= (empty) brings the store back for large tensors.
    os.environ.setdefault("PYTRITON_NO_TENSORSTORE", "1")
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        raise ServeError("specc serve needs the serve extra: pip install 'specc[serve]' "
                         "(nvidia-pytriton and tritonclient)") from None
    grpc_port = port + 1 if grpc_port is None else grpc_port
    metrics_port = port + 2 if metrics_port is None else metrics_port
    for p in (port, grpc_port, metrics_port):
        if not 0 < p < 65536:
            raise ServeError(f"port {p} is out of range (HTTP {port}, gRPC {grpc_port}, metrics {metrics_port}): "
                             "pick a lower --port or set --grpc-port and --metrics-port")
        _check_port_free(host, p)
    per_request = _patch_pytriton_errors()
    name, padded, ragged = build_handlers(run_dir, k, exclude_seen, max_batch_size, per_request)

    def tensors(specs, full_shape: bool = False):
        return [Tensor(name=s.name, dtype=np.dtype(s.dtype).type, shape=((-1,) + s.dims) if full_shape else s.dims)
                for s in specs]

    config = TritonConfig(http_address=host, http_port=port, grpc_address=host, grpc_port=grpc_port,
                          metrics_address=host, metrics_port=metrics_port, allow_metrics=True, exit_timeout_secs=5,
                          log_verbose=0)

    def stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with Triton(config=config) as triton:
        triton.bind(model_name=name, infer_func=padded,
                    inputs=tensors(padded.module.input_specs()),
                    outputs=tensors(padded.module.output_specs()),
                    config=ModelConfig(max_batch_size=max_batch_size,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us)),
                    strict=False)
        triton.bind(model_name=f"{name}_ragged", infer_func=ragged,
                    inputs=tensors(ragged.module.input_specs()),
                    outputs=tensors(ragged.module.output_specs(), full_shape=True),
                    config=ModelConfig(batching=False), strict=False)
        log_fn(f"serving {name} (k={padded.module.k}) and {name}_ragged: HTTP http://{host}:{port}, "
               f"gRPC {host}:{grpc_port}, metrics http://{host}:{metrics_port}/metrics; pid {os.getpid()}")
        sys.stdout.flush()
        triton.serve()


def _check_port_free(host: str, port: int) -> None:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
