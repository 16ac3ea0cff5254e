"""Serving latency: `specc serve` (Triton Inference Server, HTTP on loopback) vs calling the model in-process.

    /work/venv/bin/python benchmarks/serve.py [--run RUN_DIR] [--spec specs/sasrec.json] [--requests 300]
                                              [--append benchmarks/RESULTS.md]

Without --run, trains a small run (synthetic data, 1 epoch). The server runs in its own process; this
process is the client (tritonclient HTTP). Reports p50/p99 latency and throughput for batch 1 and 32,
sequential requests, plus throughput with 8 concurrent clients (dynamic batching)."""
from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(model, B, seed=0):
    batch = model.random_batch(B, seed=seed)
    return {c: v[:, None] if v.dim() == 1 else v for c, v in batch.items()}


def _time(fn, n):
    for _ in range(20):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds (user + system) of `root` and its descendants, by process (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
            stats[int(entry)] = (name, int(rest[1]), (int(rest[11]) + int(rest[12])) / tick)   # comm, ppid, cpu
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (_, ppid, _) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    out: dict[str, float] = {}
    for pid in tree:
        if pid in stats:
            name = {"triton_python_b": "Triton Python-backend stubs (the model)"}.get(stats[pid][0], stats[pid][0])
            name = "specc serve (launcher)" if pid == root else name
            out[name] = out.get(name, 0.0) + stats[pid][2]
    return out


def _stats(times):
    t = np.array(times) * 1e3
    return float(np.percentile(t, 50)), float(np.percentile(t, 99))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run")
    ap.add_argument("--spec", default="specs/sasrec.json")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--serve-args", default="", help="extra `specc serve` flags, e.g. '--threads 2'")
    ap.add_argument("--append", help="append a results section to this markdown file")
    args = ap.parse_args()
    import specc
    from specc.cpu import keep_freed_memory
    from specc.export import InferenceModel, trace
    keep_freed_memory()   # as `specc serve` does
    server_threads = max(1, (os.cpu_count() or 2) // 2)   # the server's default
    tmp = tempfile.TemporaryDirectory()
    run = args.run
    if run is None:
        from specc.synth import default_schema, synthesize
        from specc.train import train
        root = Path(tmp.name)
        synthesize(default_schema(), root / "data", n_train=300, n_valid=50, seed=0)
        train(REPO / args.spec, root / "data" / "train.parquet", root / "run", eval_data=root / "data" / "valid.parquet",
              epochs=1, progress=False, log=lambda m: None)
        run = root / "run"
    model = specc.load(run)
    module = trace(InferenceModel(specc.load(run), k=args.k))   # the graph the server runs
    name = model.plan.name
    n = args.requests
    rows = []
    # in-process: the graph the server runs (with torch's default threads and with the server's), and recommend;
    # the server's overhead is taken over the faster of the two graph timings
    inproc = {}
    default_threads = torch.get_num_threads()
    for B in (1, 32):
        inputs = _batch(model, B)
        for threads in sorted({default_threads, server_threads}):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                times = _time(lambda: module(inputs), n)
            stats = _stats(times)
            inproc[B] = min(inproc.get(B, stats), stats)
            rows.append((f"in-process served graph (traced), batch {B}, {threads} thread(s)", *stats,
                         B / (stats[0] / 1e3)))
        torch.set_num_threads(default_threads)
        batch = {c: (v[:, 0] if c in model.scalar_columns else v) for c, v in inputs.items()}
        times = _time(lambda: model.recommend(batch, k=args.k), n)
        rows.append((f"in-process `recommend`, batch {B}, {default_threads} thread(s)", *_stats(times),
                     B / np.median(times)))
    # the server
    import tritonclient.http as httpclient
    port, grpc, metrics = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    t_start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "specc.cli", "serve", str(run), "--port", str(port),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--k", str(args.k),
                             *args.serve_args.split()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    server = {}
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        while True:
            try:
                if client.is_server_ready() and client.is_model_ready(name):
                    break
            except Exception:
                pass
            if proc.poll() is not None or time.time() - t_start > 180:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        ready_s = time.time() - t_start

        def request(B, seed=0):
            ins = []
            for c, v in _batch(model, B, seed).items():
                a = v.numpy()
                i = httpclient.InferInput(c, list(a.shape), "FP32" if a.dtype == np.float32 else "INT64")
                i.set_data_from_numpy(a, binary_data=True)
                ins.append(i)
            return ins
        outs = [httpclient.InferRequestedOutput("item_ids", binary_data=True),
                httpclient.InferRequestedOutput("scores", binary_data=True)]
        for B in (1, 32):
            ins = request(B)
            for _ in range(20):
                client.infer(name, ins, outputs=outs)
            times = []
            cpu0, own0 = _cpu_seconds(proc.pid), os.times()
            for _ in range(n):
                t0 = time.perf_counter()
                client.infer(name, ins, outputs=outs)
                times.append(time.perf_counter() - t0)
            if B == 32:   # where a request's CPU time goes: every process on the path, and this client
                cpu1, own1 = _cpu_seconds(proc.pid), os.times()
                cpu_ms = {k: (v - cpu0.get(k, 0.0)) / n * 1e3 for k, v in cpu1.items()}
                cpu_ms["client (tritonclient HTTP)"] = (own1.user + own1.system - own0.user - own0.system) / n * 1e3
            server[B] = _stats(times)
            rows.append((f"server HTTP, batch {B}, 1 client", *server[B], B / (server[B][0] / 1e3)))
            clients = [httpclient.InferenceServerClient(f"127.0.0.1:{port}") for _ in range(8)]

            def loop(c, reqs=n // 4):
                for _ in range(reqs):
                    c.infer(name, ins, outputs=outs)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(loop, clients))
            wall = time.perf_counter() - t0
            rows.append((f"server HTTP, batch {B}, 8 concurrent clients", float("nan"), float("nan"),
                         8 * (n // 4) * B / wall))
            for c in clients:
                c.close()
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    overhead = server[32][0] - inproc[32][0]
    lines = [f"| {what} | {p50:.2f} | {p99:.2f} | {thr:,.0f} |".replace("| nan | nan |", "| – | – |")
             for what, p50, p99, thr in rows]
    text = "\n".join([
        "", "## Serving: `specc serve` latency (CPU, HTTP on loopback)", "",
        f"Model: `{args.spec}` ({name}), 1 epoch on synthetic data (1,000 items), top-{args.k}, "
        f"max_sequence_length {model.max_length}. Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, nvidia-pytriton 0.7.0 "
        f"(tritonserver 2.51). Client: tritonclient HTTP (binary tensors) from a second process; {n} sequential "
        "requests after 20 warm-up requests.",
        "", "```bash", "/work/venv/bin/python benchmarks/serve.py --append benchmarks/RESULTS.md"
        + (f" --serve-args '{args.serve_args}'" if args.serve_args else ""), "```", "",
        "| path | p50 ms | p99 ms | rows/s |", "|---|---|---|---|", *lines, "",
        f"- Server ready {ready_s:.1f} s after launch (both models loaded). 1-minute load average at the end: "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other jobs share the machine; the client, tritonserver, "
        "its Python stub and the model process all compete for the same cores).",
        f"- Overhead of the server at batch 32, p50: {overhead:.2f} ms over the same traced graph in-process "
        f"(target ≤ 3 ms): {'met' if overhead <= 3 else 'NOT met'}.",
        "- CPU time per batch-32 request, by process (ms): " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(cpu_ms.items(), key=lambda kv: -kv[1]) if v >= 0.01)
        + f"; in-process the graph takes {inproc[32][0]:.2f} ms.", ""])
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
