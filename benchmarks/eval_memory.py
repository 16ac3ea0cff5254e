"""Peak memory of evaluation against catalog size: top-k over the full catalog never builds [batch x catalog].

    python benchmarks/eval_memory.py [--items 10000 100000 1000000 4000000] [--batch 512]

Each catalog size runs in a fresh process: build a SASRec-like model (d 64), then time one `evaluate_batch`
(top-20 over the full catalog, the eval protocol) and report the process's peak RSS above what the model
itself takes, next to the size a dense [batch x catalog] float32 score matrix would have.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _status(key: str) -> int:
    """A memory figure of this process from /proc/self/status, in kB (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def one(n_items: int, batch_size: int) -> dict:
    import torch

    import specc
    schema = specc.Schema.from_columns([{"name": "items", "tags": ["item_id", "categorical", "list"],
                                         "is_list": True, "cardinality": n_items}])
    spec = {"specc": 1, "inputs": {"max_sequence_length": 20, "embeddings": {"default_dim": 64}},
            "body": {"kind": "transformer", "architecture": "native", "d_model": 64, "n_head": 4, "n_layer": 2},
            "tasks": [{"kind": "next_item", "metrics": {"ndcg": [10, 20], "recall": [10, 20]}}]}
    model = specc.build(spec, schema).eval()
    batch = model.random_batch(batch_size, min_length=2)
    with torch.no_grad():
        model.evaluate_batch(model.random_batch(4, min_length=2), k=20)   # warm-up
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")   # reset the peak-RSS mark (VmHWM) to the current RSS
    t0 = time.perf_counter()
    with torch.no_grad():
        model.evaluate_batch(batch, k=20)
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM")
    return {"items": n_items, "batch": batch_size, "eval_ms": round(seconds * 1000, 1),
            "extra_peak_mb": round((peak - before) / 1024, 1),
            "dense_scores_mb": round(batch_size * n_items * 4 / 2**20, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 4_000_000])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.batch)))
        return 0
    print("| items | batch | eval ms | extra peak RSS MB | dense [batch x items] fp32 MB |")
    print("|---|---|---|---|---|")
    for n in args.items:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--batch", str(args.batch)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {r['items']:,} | {r['batch']} | {r['eval_ms']} | {r['extra_peak_mb']} | {r['dense_scores_mb']:,} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
