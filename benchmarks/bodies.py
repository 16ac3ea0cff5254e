"""Modern bodies against SASRec: the same data, inputs, task and training; only the body (and the loss) differs.

    specc data synth --out /tmp/synth                 # and/or: python examples/ml100k/prepare.py --out DIR
    OMP_NUM_THREADS=1 python benchmarks/bodies.py /tmp/synth [--max-length 20] [--epochs 3] [--seeds 42 43]

Every variant is specs/sasrec.json with its body and loss replaced (specs/hstu.json and specs/esasrec.json are two
of them), compiled against DATA/schema.pbtxt; one `specc train` process per run, evaluated once at the end. The
table: NDCG@10 and Recall@10 (full catalog, each session's last item; mean over seeds), training sessions/s and
whole-process wall time (medians over seeds).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from ml100k import ROOT, _median_range, measure

SAMPLED = {"kind": "sampled_softmax", "negatives": 256, "sampler": "uniform"}
CROSS_ENTROPY = {"kind": "cross_entropy"}


def _body(name: str) -> dict:
    return json.load(open(os.path.join(ROOT, "specs", f"{name}.json")))["body"]


VARIANTS = {   # name: (body, loss)
    "sasrec (native, cross-entropy)": (_body("sasrec"), CROSS_ENTROPY),
    "sasrec + sampled softmax": (_body("sasrec"), SAMPLED),
    "ligr, cross-entropy": (_body("esasrec"), CROSS_ENTROPY),
    "esasrec (ligr + sampled softmax)": (_body("esasrec"), SAMPLED),
    "hstu, cross-entropy": (_body("hstu"), CROSS_ENTROPY),
    "hstu + sampled softmax": (_body("hstu"), SAMPLED),
}


def spec_for(body: dict, loss: dict, schema: str, max_length: int, seed: int) -> dict:
    spec = json.load(open(os.path.join(ROOT, "specs", "sasrec.json")))
    spec.pop("$schema")
    spec["schema"] = schema
    spec["inputs"]["max_sequence_length"] = max_length
    spec["body"] = body
    spec["tasks"][0]["loss"] = loss
    spec["training"]["seed"] = seed
    return spec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="folder with train.parquet, valid.parquet and schema.pbtxt")
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run these variants alone")
    args = parser.parse_args()
    data = os.path.abspath(args.data)
    runs: dict[str, list[tuple]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:   # interleaved, so a slow spell of this shared machine hits every variant alike
            for name in args.only or VARIANTS:
                spec_path, run_dir = os.path.join(tmp, "spec.json"), tempfile.mkdtemp(dir=tmp)
                with open(spec_path, "w") as f:
                    json.dump(spec_for(*VARIANTS[name], f"{data}/schema.pbtxt", args.max_length, seed), f)
                result, wall, _ = measure([sys.executable, "-m", "specc.cli", "train", spec_path,
                                           "--data", f"{data}/train.parquet", "--eval", f"{data}/valid.parquet",
                                           "--out", os.path.join(run_dir, "run"),
                                           "--epochs", str(args.epochs), "--eval-every", str(args.epochs), "--quiet"])
                runs.setdefault(name, []).append((result["ndcg@10"], result["recall@10"],
                                                  result["train_sessions_per_s"], wall))
    print(f"{data}: max_sequence_length {args.max_length}, {args.epochs} epochs, seeds {args.seeds}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load average now {os.getloadavg()[0]:.1f}")
    print("| body | NDCG@10 | Recall@10 | train sessions/s | wall s (whole process) |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        ndcg, recall = (statistics.mean(r[i] for r in results) for i in (0, 1))
        print(f"| {name} | {ndcg:.4f} | {recall:.4f} | {_median_range([r[2] for r in results], '{:,.0f}')} | "
              f"{_median_range([r[3] for r in results], '{:.1f}')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
