"""`specc serve RUN_DIR`: a trained run behind Triton Inference Server.

Two models, both KServe-v2 over HTTP (--port) and gRPC (--grpc-port, default port + 1), Prometheus metrics
on --metrics-port (default port + 2), health at /v2/health/ready and /v2/models/<name>/ready:

  <name>          padded inputs (list column `col` as [B, L] right-padded with 0, scalars [B, 1]);
                  dynamic batching up to --max-batch-size rows
  <name>_ragged   Merlin's ragged form (`col__values` [N], `col__offsets` [B + 1]; scalars [B]); unbatched

Outputs: `item_ids` and `scores` [B, k] of the top-k next items (never id 0), and one [B, 1] output per other
task (binary_classification: probability, regression: value). Results equal `specc.load(RUN_DIR).recommend`.
Where the run has id mappings (trained on `specc data prepare` output), ids are raw values by default (--ids
raw|internal, as for `specc recommend`): strings as BYTES, integers as INT64, padding "" / 0 (`specc/serve_ids.py`).

Every request is validated before it reaches the model; a bad one (declared shapes or a size out of bounds,
malformed JSON data, an unknown or missing column, a batch of 0 rows — caught by the guard,
`specc/serve_guard.py`; a wrong dtype, an oversized batch — caught by Triton; ids outside the catalog, an
empty or left-padded session, non-finite values, inconsistent ragged offsets, unknown raw ids — caught by
`Handler` in the backend stub, `specc/serve_handler.py`) is answered with HTTP 400 / gRPC INVALID_ARGUMENT and
a one-line message, and only that request fails: requests batched with it are answered normally.

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
from dataclasses import asdict
from pathlib import Path

from specc.serve_handler import Signature
from specc.serve_limits import ServedModel
from specc.serve_supervisor import RestartPolicy, Supervisor
from specc.serve_workspace import ServeError, check_port_free, make_workspace, remove_stale_shm_regions


# ---------------------------------------------------------------------- the model repository

_MODEL_PY = "from specc.triton_model import TritonPythonModel  # noqa: F401  (written by specc serve)\n"


def write_repository(run_dir, repo: Path, k: int = 20, exclude_seen: bool = False, max_batch_size: int = 64,
                     max_queue_delay_us: int = 0, threads: int = 1, ids: str | None = None) -> tuple[list[str], str]:
    """Trace the run's padded and ragged graphs into a Triton repository of Python-backend models; their names
    and a line on which columns take raw ids (`ids`: see `specc.serve_ids`)."""
    import specc
    from specc.export import InferenceModel, TensorSpec, model_name, trace, triton_config
    from specc.serve_ids import copy_mappings, describe, plan_raw_ids
    model = specc.load(run_dir, device="cpu")
    name = model_name(model)
    padded = InferenceModel(model, k=k, exclude_seen=exclude_seen)
    ragged = InferenceModel(model, k=k, exclude_seen=exclude_seen, ragged=True)
    raw = plan_raw_ids(run_dir, padded, ids)
    for mname, module, batch in ((name, padded, max_batch_size), (f"{name}_ragged", ragged, 0)):
        version = repo / mname / "1"
        version.mkdir(parents=True)
        signature = Signature.of(mname, module, max_batch_size, threads, raw)
        copy_mappings(run_dir, raw, version)
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
        inputs, outputs = ([TensorSpec(s["name"], s["dtype"], tuple(s["dims"])) for s in specs]
                           for specs in (signature.inputs, signature.outputs))
        (repo / mname / "config.pbtxt").write_text(triton_config(mname, inputs, outputs, batch, "python", False,
                                                                 max_queue_delay_us))
    return [name, f"{name}_ragged"], describe(raw, padded.id_ranges)


def served_models(repo: Path, names: list[str]) -> dict:
    """What the guard checks requests against: each model's input names, and whether it is batched."""
    signatures = [Signature(**json.loads((repo / name / "1" / "signature.json").read_text())) for name in names]
    return {s.name: ServedModel(tuple(i["name"] for i in s.inputs), batched=not s.ragged) for s in signatures}


# ---------------------------------------------------------------------- the server

def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, grpc_port: int | None = None,
          metrics_port: int | None = None, max_batch_size: int = 64, k: int = 20, exclude_seen: bool = False,
          max_queue_delay_us: int = 0, threads: int | None = None, log_fn=print, ready_timeout: float = 300,
          max_request_mb: int = 64, restart: RestartPolicy = RestartPolicy(), ids: str | None = None) -> None:
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
        names, id_forms = write_repository(run_dir, workspace / "models", k, exclude_seen, max_batch_size,
                                           max_queue_delay_us, threads, ids)
        guard.check_models(served_models(workspace / "models", names))
        supervisor.run(names, f"serving {names[0]} (k={k}) and {names[1]}: HTTP http://{host}:{port}, gRPC "
                              f"{host}:{grpc_port}, metrics http://{host}:{metrics_port}/metrics; {id_forms}; "
                              f"pid {os.getpid()}")
        if stop["signal"] is not None:
            log_fn(f"stopping ({signal.Signals(stop['signal']).name})")
    finally:
        if supervisor is not None:
            supervisor.close()
        if guard is not None:
            guard.stop()
        shutil.rmtree(workspace, ignore_errors=True)
        remove_stale_shm_regions()
