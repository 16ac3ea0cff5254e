"""What `specc serve`'s guard costs: the same requests alternating through it and straight to tritonserver.

    /work/venv/bin/python benchmarks/serve_guard.py --run RUN_DIR [--requests 300] [--batch 1 16]

Starts `specc serve RUN_DIR` (max batch 32), reads tritonserver's private ports from its command line, and
sends each batch size's requests over HTTP and gRPC (tritonclient, binary tensors), alternating between the
guard's public ports and tritonserver's own, so a slow spell of a shared machine hits both paths alike.
Prints p50 latency per path and the CPU time of the `specc serve` process (the guard) per guarded request."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _private_ports(serve_pid: int) -> tuple[int, int]:
    for entry in os.listdir("/proc"):
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except (OSError, UnicodeDecodeError):
            continue
        if args[0].endswith("/bin/tritonserver") and f"specc-serve-{serve_pid}." in args[0]:
            return int(args[args.index("--http-port") + 1]), int(args[args.index("--grpc-port") + 1])
    raise SystemExit("no tritonserver of that specc serve found")


def _inputs(module, model, B: int) -> list:
    out = []
    for name, t in model.random_batch(B, seed=1).items():
        a = t.numpy() if t.dim() == 2 else t.numpy()[:, None]
        out.append(module.InferInput(name, list(a.shape), "FP32" if a.dtype == np.float32 else "INT64"))
        out[-1].set_data_from_numpy(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args()
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    import specc
    from specc.export import model_name
    model = specc.load(args.run)
    name = model_name(model)
    http, grpc = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "specc.cli", "serve", args.run, "--port", str(http),
                             "--grpc-port", str(grpc), "--metrics-port", str(_free_port()), "--max-batch-size", "32"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        guarded = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        deadline = time.time() + 180
        while not _ready(guarded, name):
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        private_http, private_grpc = _private_ports(proc.pid)
        paths = {"HTTP via guard": (httpclient, guarded),
                 "HTTP direct": (httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{private_http}")),
                 "gRPC via guard": (grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")),
                 "gRPC direct": (grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{private_grpc}"))}
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {args.requests} requests per path")
        for B in args.batch:
            inputs = {p: _inputs(module, model, B) for p, (module, _) in paths.items()}
            times: dict = {p: [] for p in paths}
            cpu: dict = {p: 0.0 for p in paths}
            for i in range(args.requests + 20):   # the first 20 of each path warm up
                for p, (_, client) in paths.items():
                    c0, t0 = _cpu_seconds(proc.pid), time.perf_counter()
                    client.infer(name, inputs[p])
                    if i >= 20:
                        times[p].append(time.perf_counter() - t0)
                        cpu[p] += _cpu_seconds(proc.pid) - c0
            for p in paths:
                print(f"batch {B:>3}  {p:<15} p50 {np.median(times[p]) * 1e3:6.2f} ms   specc serve CPU "
                      f"{cpu[p] / args.requests * 1e3:.2f} ms/request")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _ready(client, name: str) -> bool:
    try:
        return client.is_server_ready() and client.is_model_ready(name)
    except Exception:   # noqa: BLE001 - not listening yet
        return False


if __name__ == "__main__":
    main()
