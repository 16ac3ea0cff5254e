#!/usr/bin/env python
"""`specc data prepare` against the Transformers4Rec tutorial's NVTabular CPU workflow, on the same raw log.

    python benchmarks/prepare.py --events 10_000_000 [--nvt-python /tmp/nvt-venv/bin/python] [--work DIR]
    python benchmarks/prepare.py --events 100_000_000 --no-nvt        # specc alone, bounded memory

Writes a synthetic raw log (parquet, one file per `--file-events` events, each in time order with sessions
interleaved; session lengths geometric with mean 8, items Zipf-distributed over `--items`, a category per
item), then runs each side in its own process and reports its wall time and peak RSS (from wait4):

- specc: `specc data prepare LOG --out DIR --item item_id --time timestamp --session session_id
  --categorical category --min-length 2` (polars, streaming, hash-partitioned buckets);
- NVTabular 23.08 (CPU, dask threads): Categorify(item_id, category) -> Groupby(session_id, sorted by
  timestamp, list aggregation + count + first timestamp) -> Filter(item_id-count >= 2) -> to_parquet, as in
  the Transformers4Rec getting-started tutorial. NVTabular's Groupby works per partition, so it needs every
  session inside one partition: here each session lies in one file (as in a daily log), which is the favourable
  case for NVTabular; specc shuffles by session key whatever the layout.

NVTabular needs its own virtual environment (pandas<2 era pins; see benchmarks/nvt_setup.sh).
Both sides get the same threads (POLARS_MAX_THREADS / dask threads = --threads).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

NVT_SCRIPT = r"""
import os, sys, warnings
warnings.simplefilter("ignore")
import glob, nvtabular as nvt
from dask.distributed import Client, LocalCluster
src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = Client(LocalCluster(n_workers=1, threads_per_worker=threads, processes=False, dashboard_address=None))
cats = ["item_id", "category"] >> nvt.ops.Categorify()
groupby = (["session_id", "timestamp"] + cats) >> nvt.ops.Groupby(
    groupby_cols=["session_id"], sort_cols=["timestamp"],
    aggs={"item_id": ["list", "count"], "category": ["list"], "timestamp": ["first"]}, name_sep="-")
filtered = groupby >> nvt.ops.Filter(f=lambda df: df["item_id-count"] >= 2)
workflow = nvt.Workflow(filtered)
dataset = nvt.Dataset(sorted(glob.glob(os.path.join(src, "*.parquet"))), engine="parquet", cpu=True, part_size="256MB")
workflow.fit_transform(dataset).to_parquet(out)
import dask.dataframe as dd
print("ROWS", len(dd.read_parquet(out)))
"""


def make_log(folder: str, n_events: int, file_events: int, n_items: int, seed: int = 0) -> None:
    """The raw log, written file by file (bounded memory); each file's sessions lie in that file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_items + 1)
    popularity = 1.0 / ranks
    cumulative = np.cumsum(popularity / popularity.sum())
    category_of = rng.integers(1, 1000, n_items)
    session0, start_s = 0, 1_700_000_000
    for part, first in enumerate(range(0, n_events, file_events)):
        n = min(file_events, n_events - first)
        lengths = rng.geometric(1 / 8, size=n // 4 + 16)
        lengths = lengths[: np.searchsorted(np.cumsum(lengths), n) + 1]
        lengths[-1] -= lengths.sum() - n
        sessions = np.repeat(np.arange(session0, session0 + len(lengths)), lengths)
        session0 += len(lengths)
        starts = start_s + rng.integers(0, 86_400, len(lengths))
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        step = np.arange(n) - np.repeat(offsets, lengths)
        timestamps = np.repeat(starts, lengths) + step * 30 + rng.integers(0, 30, n)
        items = np.minimum(np.searchsorted(cumulative, rng.random(n)), n_items - 1)
        order = np.argsort(timestamps, kind="stable")          # a log is written in time order
        table = pa.table({"session_id": sessions[order], "item_id": items[order],
                          "timestamp": timestamps[order], "category": category_of[items[order]]})
        pq.write_table(table, os.path.join(folder, f"part-{part:04d}.parquet"), row_group_size=1 << 20)
        start_s += 86_400


def measured(command: list[str], env: dict) -> dict:
    """Run `command`; its wall time, peak RSS (wait4's ru_maxrss) and output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{out[-3000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024), "output": out.strip()[-400:]}


def run_specc(log: str, out: str, threads: int, partition_rows: int | None) -> dict:
    env = {**os.environ, "POLARS_MAX_THREADS": str(threads), "PYTHONPATH": ROOT}
    command = [sys.executable, "-c", "import sys; from specc.cli import main; sys.exit(main())", "data", "prepare", log, "--out", out, "--item", "item_id", "--time",
               "timestamp", "--session", "session_id", "--categorical", "category", "--min-length", "2", "--quiet"]
    if partition_rows:
        command += ["--partition-rows", str(partition_rows)]
    result = measured(command, env)
    report = json.load(open(os.path.join(out, "report.json")))
    result["sessions"] = report["sessions"]["kept"]
    return result


def run_nvt(python: str, log: str, out: str, threads: int) -> dict:
    result = measured([python, "-c", NVT_SCRIPT, log, out, str(threads)], {**os.environ, "OMP_NUM_THREADS": "1"})
    result["sessions"] = int(result["output"].split("ROWS")[-1].split()[0])
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=lambda s: int(s.replace("_", "")), default=10_000_000)
    p.add_argument("--file-events", type=lambda s: int(s.replace("_", "")), default=5_000_000)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--partition-rows", type=int, default=None)
    p.add_argument("--work", default="/tmp/specc-prepare-bench")
    p.add_argument("--nvt-python", default="/tmp/nvt-venv/bin/python")
    p.add_argument("--no-nvt", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the log and outputs")
    args = p.parse_args()
    log = os.path.join(args.work, f"log-{args.events}")
    if not os.path.isdir(log):
        t0 = time.perf_counter()
        make_log(log, args.events, args.file_events, args.items)
        print(f"wrote the log {log} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    size = sum(os.path.getsize(os.path.join(log, f)) for f in os.listdir(log))
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "events": args.events,
               "log_mb": round(size / 2**20), "files": len(os.listdir(log)), "threads": args.threads,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "command": " ".join(sys.argv)}
    for name in ("specc", "nvtabular"):
        shutil.rmtree(os.path.join(args.work, f"out-{name}"), ignore_errors=True)
    results["specc"] = run_specc(log, os.path.join(args.work, "out-specc"), args.threads, args.partition_rows)
    print(json.dumps(results["specc"]), file=sys.stderr)
    if not args.no_nvt:
        results["nvtabular"] = run_nvt(args.nvt_python, log, os.path.join(args.work, "out-nvtabular"), args.threads)
        results["speedup"] = round(results["nvtabular"]["seconds"] / results["specc"]["seconds"], 2)
    for name in ("specc", "nvtabular"):
        results.get(name, {}).pop("output", None)
    if not args.keep:
        for name in ("specc", "nvtabular"):
            shutil.rmtree(os.path.join(args.work, f"out-{name}"), ignore_errors=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
