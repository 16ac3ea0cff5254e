"""Memory and speed of streamed data at scale: peak RSS reading (and training on) 1M vs 8M sessions, sessions/s.

    python benchmarks/scale.py [--sessions 1000000 8000000] [--folder /tmp/specc-scale] [--procs 1 2] [--train S]

Data: one parquet file per size, written row group by row group (100k sessions each, streaming: generation holds
one row group), session lengths 2..20, 10,000 items, plus a schema.pbtxt. Each measurement runs in a fresh
process (one per rank) and reports the peak RSS (ru_maxrss) of the biggest one:
  * check: `open_dataset` alone, the validation pass over every row (seconds per million sessions);
  * read: `open_dataset` and one shuffled epoch of batches of 256 per process, at each of `--procs` processes
    (gloo process group; each validates about 1/procs of the rows and reads its own share), sessions/s over all;
  * train (`--train S`): `specc train` (a 1-layer SASRec-like spec, batch 256; `--nproc-per-node` for 2
    processes) for S seconds, then SIGTERM, which saves and stops it: its peak RSS and sessions/s.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
N_ITEMS, ROW_GROUP, MAX_LENGTH, BATCH = 10_000, 100_000, 20, 256


def generate(path: str, n_sessions: int) -> None:
    """`n_sessions` random sessions in row groups of ROW_GROUP, written one group at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(n_sessions)
    schema = pa.schema([("item_id-list", pa.list_(pa.int64()))])
    with pq.ParquetWriter(path + ".tmp", schema) as writer:
        for start in range(0, n_sessions, ROW_GROUP):
            n = min(ROW_GROUP, n_sessions - start)
            lengths = rng.integers(2, 21, n)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            values = rng.zipf(1.3, offsets[-1]) % (N_ITEMS - 1) + 1
            column = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values))
            writer.write_table(pa.table({"item_id-list": column}, schema=schema))
    os.replace(path + ".tmp", path)


def schema_file(folder: str) -> str:
    from specc.schema import Schema, save_schema
    save_schema(Schema.from_columns([{"name": "item_id-list", "tags": ["item_id", "categorical", "list"],
                                      "is_list": True, "cardinality": N_ITEMS}]), folder)
    return os.path.join(folder, "schema.pbtxt")


def child(mode: str, path: str, rank: int, world_size: int) -> None:
    """One measuring process: prints seconds, rows and peak RSS (and the RSS before opening the data) as JSON."""
    import torch  # noqa: F401  (imported before the baseline is taken, as training would)

    from specc.data import open_dataset
    from specc.distributed import from_environment
    from specc.schema import load_schema
    schema = load_schema(os.path.join(os.path.dirname(path), "schema.pbtxt"))
    context = from_environment(device="cpu")   # several processes: each validates its part, as training does
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    ds = open_dataset(path, schema, ["item_id-list"], item_column="item_id-list", max_length=MAX_LENGTH,
                      min_length=2, rank=rank, world_size=world_size, exchange=context.all_gather_object)
    checked = time.perf_counter() - t0
    rows = 0
    t1 = time.perf_counter()
    if mode == "read":
        for batch in ds.batches(BATCH, shuffle=True, seed=0, epoch=0):
            rows += batch["item_id-list"].shape[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    context.close()
    print(json.dumps({"check_seconds": checked, "read_seconds": time.perf_counter() - t1, "rows": rows,
                      "n_rows": ds.n_rows, "peak_rss_mb": round(peak, 1),
                      "baseline_rss_mb": round(baseline, 1)}))


def measure(mode: str, path: str, procs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if procs > 1:   # what torchrun would set
        env.update(WORLD_SIZE=str(procs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    t0 = time.perf_counter()
    running = [subprocess.Popen([sys.executable, __file__, "--child", mode, path, str(r), str(procs)],
                                env=dict(env, RANK=str(r), LOCAL_RANK=str(r)) if procs > 1 else env,
                                stdout=subprocess.PIPE, text=True) for r in range(procs)]
    results = [json.loads(p.communicate()[0]) for p in running]
    wall = time.perf_counter() - t0
    n = results[0]["n_rows"]
    out = {"mode": mode, "procs": procs, "sessions": n, "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
           "baseline_rss_mb": max(r["baseline_rss_mb"] for r in results),
           "check_s_per_million": round(max(r["check_seconds"] for r in results) / n * 1e6, 2)}
    if mode == "read":
        out["read_sessions_per_s"] = round(sum(r["rows"] for r in results) /
                                           max(r["read_seconds"] for r in results))
        out["wall_s"] = round(wall, 1)
    return out


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(path: str, procs: int, out_dir: str, seconds: float) -> dict:
    """`specc train` (`--nproc-per-node` for several processes) for at most `seconds`, then SIGTERM (it saves and
    stops after the current step): peak RSS of the biggest process, sessions/s over all processes."""
    spec = {"specc": 1, "inputs": {"max_sequence_length": MAX_LENGTH, "embeddings": {"default_dim": 32}},
            "body": {"kind": "transformer", "architecture": "native", "d_model": 32, "n_head": 2, "n_layer": 1},
            "tasks": [{"kind": "next_item"}], "training": {"epochs": 1, "batch_size": BATCH}}
    spec_path = os.path.join(out_dir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    run = os.path.join(out_dir, f"run-{os.path.basename(path)}-{procs}")
    subprocess.run(["rm", "-rf", run], check=True)
    command = [sys.executable, "-m", "specc", "train", spec_path, "--data", path, "--out", run, "--quiet",
               "--device", "cpu"] + (["--nproc-per-node", str(procs)] if procs > 1 else [])
    t0 = time.perf_counter()
    process = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.DEVNULL)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(process.pid, 0)   # ru_maxrss: the biggest of it and the processes it waited for
    process.returncode = status
    with open(os.path.join(run, "checkpoint.json")) as f:
        checkpoint = json.load(f)["checkpoint"]
    with open(os.path.join(run, checkpoint, "train_state.json")) as f:
        state = json.load(f)    # the position saved: sessions and seconds of the epoch in progress (or finished)
    sessions, seconds = (state["sessions"], state["seconds"]) if state["batch"] else \
        (state["train_sessions"], state["train_seconds"])
    return {"mode": "train", "procs": procs, "steps": state["step"], "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "wall_s": round(time.perf_counter() - t0, 1), "train_sessions_per_s": round(sessions / max(seconds, 1e-9))}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1_000_000, 8_000_000])
    parser.add_argument("--folder", default="/tmp/specc-scale")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--train", type=float, default=0, metavar="SECONDS",
                        help="also train on each size for at most SECONDS (then stopped by SIGTERM)")
    parser.add_argument("--train-only", action="store_true", help="skip the check and read measurements")
    args = parser.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    schema_file(args.folder)
    for n in args.sessions:
        path = os.path.join(args.folder, f"sessions_{n}.parquet")
        if not os.path.exists(path):
            t0 = time.perf_counter()
            generate(path, n)
            print(json.dumps({"generated": path, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        if not args.train_only:
            print(json.dumps(measure("check", path, 1)), flush=True)
            for procs in args.procs:
                print(json.dumps(measure("read", path, procs)), flush=True)
        if args.train:
            for procs in args.procs:
                print(json.dumps(train(path, procs, args.folder, args.train)), flush=True)


if __name__ == "__main__":
    main()
