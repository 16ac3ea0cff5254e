"""`specc serve RUN_DIR`: a trained run behind Triton Inference Server.

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

How it runs: `serve` traces the two inference graphs, writes them into a Triton model repository as
Python-backend models (`specc/triton_model.py`) and starts the tritonserver that nvidia-pytriton ships (the
`serve` extra). The graphs run inside Triton's Python-backend stub, so a request crosses one process boundary
(tritonserver <-> stub, shared memory). PyTriton's own `Triton.bind` adds a second one, to a proxy in the
calling process over ZeroMQ with base64-encoded tensors, which on 2 cores cost more than the model itself
(batch 32: ~2.7 ms of CPU per request outside the graph; see benchmarks/RESULTS.md). Triton's Python-backend
stub loads libpython dynamically; the interpreter's own LIBDIR comes first on its LD_LIBRARY_PATH, or it
picks a system libpython of another patch version. SIGTERM (and SIGINT) stop tritonserver and its stubs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from specc.errors import UserError


class ServeError(UserError):
    """The server cannot start as asked (missing extra, bad run directory, port in use, ...)."""


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

def _tritonserver(workspace: Path) -> Path:
    """nvidia-pytriton's tritonserver, with the Python-backend stub built for this interpreter's version."""
    try:
        from pytriton.utils.distribution import get_root_module_path, get_stub_path
    except ImportError:
        raise ServeError("specc serve needs the serve extra: pip install 'specc[serve]' "
                         "(nvidia-pytriton and tritonclient)") from None
    server = workspace / "tritonserver"
    shutil.copytree(get_root_module_path() / "tritonserver", server,
                    ignore=shutil.ignore_patterns("python_backend_stubs", "triton_python_backend_stub"))
    shutil.copy(get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}"),
                server / "backends" / "python" / "triton_python_backend_stub")
    return server


def _server_env() -> dict:
    """The environment of tritonserver and its stubs: this interpreter's LIBDIR first on LD_LIBRARY_PATH (the
    stub loads libpython by name), Triton's own libraries, this environment's Python, and specc importable."""
    from pytriton.utils.distribution import get_libs_path
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    libdir = sysconfig.get_config_var("LIBDIR")
    libs = [p for p in (libdir, str(get_libs_path()), *env.get("LD_LIBRARY_PATH", "").split(os.pathsep)) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(libs))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if `specc serve` dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import ctypes.util
    try:
        ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, grpc_port: int | None = None,
          metrics_port: int | None = None, max_batch_size: int = 64, k: int = 20, exclude_seen: bool = False,
          max_queue_delay_us: int = 0, threads: int | None = None, log_fn=print, ready_timeout: float = 300) -> None:
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
        _check_port_free(host, p)
    threads = threads or max(1, (os.cpu_count() or 2) // 2)
    stop = {"signal": None}

    def request_stop(signum, frame):
        stop["signal"] = signum
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    _remove_stale_shm_regions()
    workspace = Path(tempfile.mkdtemp(prefix="specc-serve-"))
    proc = None
    try:
        server = _tritonserver(workspace)
        names = write_repository(run_dir, workspace / "models", k, exclude_seen, max_batch_size, max_queue_delay_us,
                                 threads)
        log_path = workspace / "tritonserver.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [str(server / "bin" / "tritonserver"), "--model-repository", str(workspace / "models"),
                 "--backend-directory", str(server / "backends"), "--http-address", host, "--http-port", str(port),
                 "--grpc-address", host, "--grpc-port", str(grpc_port), "--metrics-address", host,
                 "--metrics-port", str(metrics_port), "--allow-metrics", "true", "--strict-readiness", "true",
                 "--exit-timeout-secs", "5", "--log-verbose", "0",
                 "--backend-config", f"python,shm-region-prefix-name={_shm_prefix(os.getpid())}"],
                env=_server_env(), stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        _wait_ready(proc, host, port, names, log_path, stop, ready_timeout)
        if stop["signal"] is None:
            log_fn(f"serving {names[0]} (k={k}) and {names[1]}: HTTP http://{host}:{port}, gRPC {host}:{grpc_port}, "
                   f"metrics http://{host}:{metrics_port}/metrics; pid {os.getpid()}")
            sys.stdout.flush()
        while stop["signal"] is None and proc.poll() is None:
            time.sleep(0.2)
        if stop["signal"] is None:
            raise ServeError(f"tritonserver exited (code {proc.returncode}):\n{_tail(log_path)}")
        log_fn(f"stopping ({signal.Signals(stop['signal']).name})")
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workspace, ignore_errors=True)
        _remove_stale_shm_regions()


_SHM = Path("/dev/shm")


def _shm_prefix(pid: int) -> str:
    return f"specc-serve-{pid}-"


def _remove_stale_shm_regions() -> None:
    """Shared-memory regions of the Python backend that a killed server left behind (its pid is gone)."""
    if not _SHM.is_dir():
        return
    for region in _SHM.glob(_shm_prefix("*") + "*"):
        pid = region.name.split("-")[2]
        if (pid.isdigit() and not Path(f"/proc/{pid}").exists()) or pid == str(os.getpid()):
            region.unlink(missing_ok=True)


def _wait_ready(proc, host: str, port: int, names: list[str], log_path: Path, stop: dict, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    urls = [f"http://{host}:{port}/v2/health/ready"] + [f"http://{host}:{port}/v2/models/{n}/ready" for n in names]
    while stop["signal"] is None:
        if proc.poll() is not None:
            raise ServeError(f"tritonserver stopped while starting (code {proc.returncode}):\n{_tail(log_path)}")
        if all(_http_ok(u) for u in urls):
            return
        if time.monotonic() > deadline:
            raise ServeError(f"tritonserver was not ready after {timeout:.0f} s:\n{_tail(log_path)}")
        time.sleep(0.2)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(proc) -> None:
    """SIGTERM tritonserver (it stops its stubs), then SIGKILL what is left of it after 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _check_port_free(host: str, port: int) -> None:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
