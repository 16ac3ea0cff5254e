"""specc vs Transformers4Rec on MovieLens 100K: the same causal XLNet, data and epochs; quality, speed, memory.

    python examples/ml100k/prepare.py                      # once: -> examples/ml100k/data/
    bash benchmarks/t4rec_setup.sh                         # once: Transformers4Rec 23.12 in /tmp/t4rec-venv
    python benchmarks/ml100k.py [--t4rec-python /tmp/t4rec-venv/bin/python] [--epochs 10] [--repeats 3] [--precisions fp32]

Each side runs as its own process, end to end (imports, data loading, training, evaluation); the table shows
NDCG@10/Recall@10 on the last item of each user, training throughput, whole-process wall time and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "examples", "ml100k", "data")


def measure(cmd: list[str]) -> tuple[dict, float, float]:
    """(the last JSON object the command printed, wall seconds, peak RSS in MB of that process)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    text = stdout.strip()
    start = text.rfind("\n{") + 1 if not text.startswith("{") else 0
    return json.loads(text[start:]), wall, usage.ru_maxrss / 1024


def _median_range(values: list[float], fmt: str) -> str:
    text = fmt.format(statistics.median(values))
    return text if len(values) == 1 else f"{text} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t4rec-python", default="/tmp/t4rec-venv/bin/python")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side, interleaved; the table shows "
                        "medians (this machine's speed drifts between runs)")
    parser.add_argument("--precisions", default="fp32,bf16", help="specc's runs (bf16 pays only on CPUs with bf16 "
                        "arithmetic: AVX512-BF16/AMX)")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(DATA, "train.parquet")):
        raise SystemExit("run `python examples/ml100k/prepare.py` first")
    specc_cli = [sys.executable, "-m", "specc.cli"]
    runs: dict[str, list[tuple]] = {}
    for _ in range(args.repeats):   # interleaved, so a slow spell of this shared machine hits every side alike
        for precision in args.precisions.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                result, wall, rss = measure(specc_cli + [
                    "train", "examples/ml100k/xlnet_causal.json", "--data", f"{DATA}/train.parquet",
                    "--eval", f"{DATA}/valid.parquet", "--out", f"{tmp}/run", "--epochs", str(args.epochs),
                    "--eval-every", str(args.epochs),   # evaluate once, after training, as the T4Rec side does
                    "--precision", precision, "--quiet"])
            runs.setdefault(f"specc ({precision})", []).append(
                (result["ndcg@10"], result["recall@10"], result["train_sessions_per_s"], wall, rss))
        if os.path.isfile(args.t4rec_python):
            result, wall, rss = measure([args.t4rec_python, "benchmarks/t4rec_ml100k.py", "--epochs", str(args.epochs)])
            runs.setdefault("Transformers4Rec 23.12", []).append(
                (result["ndcg@10"], result["recall@10"], result["sessions_per_s"], wall, rss))
    if not os.path.isfile(args.t4rec_python):
        print(f"(no Transformers4Rec venv at {args.t4rec_python}: run benchmarks/t4rec_setup.sh)")
    print(f"median of {args.repeats} run(s) each (range in brackets); load average now "
          f"{os.getloadavg()[0]:.1f}")
    print("| run | NDCG@10 | Recall@10 | train sessions/s | wall s (whole process) | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for name, results in runs.items():
        ndcg, recall = results[0][:2]
        rates, walls, rsss = ([r[i] for r in results] for i in (2, 3, 4))
        print(f"| {name} | {ndcg:.4f} | {recall:.4f} | {_median_range(rates, '{:,.0f}')} | "
              f"{_median_range(walls, '{:.1f}')} | {statistics.median(rsss):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
