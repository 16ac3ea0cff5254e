#!/usr/bin/env python
"""specc against real peers on MovieLens 100K: RecTools' SASRecModel (softmax loss) and Transformers4Rec 23.12.

    python examples/ml100k/prepare.py                         # once: -> examples/ml100k/data/
    python3.11 -m venv /work/peers-venv && /work/peers-venv/bin/pip install torch==2.13.0 "rectools[torch]"
    bash benchmarks/t4rec_setup.sh                            # once: -> /tmp/t4rec-venv
    OMP_NUM_THREADS=1 python benchmarks/peers.py [--epochs 10] [--specc-epochs N] [--repeats 1]

The same leave-last-out split for everyone (prepare.py: train on each user's history without its last item,
rank the full catalog for that item given the rest; no filtering of seen items on any side), each side in its
own process on one thread, interleaved. RecTools: SASRecModel with d 64, 2 blocks, 2 heads, 50 items of context,
batch 128, its defaults otherwise (lr 1e-3, dropout 0.2, softmax loss), metrics computed here from its top-10.
Transformers4Rec: benchmarks/t4rec_ml100k.py (its causal XLNet, d 64). specc: specs/sasrec.json's model with
specc's training defaults and 50 items of context. The table shows NDCG@10 / Recall@10, the training time each
side reports and the whole-process wall time.

`--side rectools` runs the RecTools side alone (in the venv that has rectools) and prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "examples", "ml100k", "data")
CONTEXT = 50


def rectools_side(data: str, epochs: int) -> dict:
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    import torch
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel
    torch.set_num_threads(1)
    torch.manual_seed(42)
    train = pq.read_table(os.path.join(data, "train.parquet"), columns=["item_id-list"]).column(0).to_pylist()
    valid = pq.read_table(os.path.join(data, "valid.parquet"), columns=["item_id-list"]).column(0).to_pylist()
    users = np.repeat(np.arange(len(train)), [len(s) for s in train])
    order = np.concatenate([np.arange(len(s)) for s in train])
    interactions = pd.DataFrame({Columns.User: users, Columns.Item: np.concatenate(train), Columns.Weight: 1.0,
                                 Columns.Datetime: pd.to_datetime(order, unit="s")})
    dataset = Dataset.construct(interactions)
    model = SASRecModel(n_factors=64, n_blocks=2, n_heads=2, session_max_len=CONTEXT, loss="softmax", epochs=epochs,
                        batch_size=128, deterministic=True, recommend_torch_device="cpu")
    t0 = time.perf_counter()
    model.fit(dataset)
    train_s = time.perf_counter() - t0
    reco = model.recommend(users=np.arange(len(train)), dataset=dataset, k=10, filter_viewed=False)
    rank = {(u, i): r for u, i, r in zip(reco[Columns.User], reco[Columns.Item], reco[Columns.Rank])}
    ranks = [rank.get((u, s[-1])) for u, s in enumerate(valid)]
    return {"ndcg@10": float(np.mean([1 / np.log2(r + 1) if r else 0.0 for r in ranks])),
            "recall@10": float(np.mean([r is not None for r in ranks])), "train_s": round(train_s, 2),
            "eval_sessions": len(valid)}


def specc_spec(path: str) -> None:
    with open(os.path.join(ROOT, "specs", "sasrec.json")) as f:
        spec = json.load(f)
    for key in ("$schema", "schema"):
        spec.pop(key)
    spec["name"] = "sasrec-ml100k"
    spec["inputs"]["max_sequence_length"] = CONTEXT
    spec["body"].pop("dropout")
    spec["tasks"][0]["metrics"] = {"ndcg": [10], "recall": [10]}
    spec.pop("training")
    with open(path, "w") as f:
        json.dump(spec, f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["rectools"], help="run one side here and print its JSON")
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--epochs", type=int, default=10, help="the peers' epochs")
    parser.add_argument("--specc-epochs", type=int, default=None, help="specc's epochs (default: --epochs)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rectools-python", default="/work/peers-venv/bin/python")
    parser.add_argument("--t4rec-python", default="/tmp/t4rec-venv/bin/python")
    args = parser.parse_args()
    if args.side == "rectools":
        print(json.dumps(rectools_side(args.data, args.epochs)))
        return 0
    from ml100k import measure   # benchmarks/ml100k.py: one process, its last JSON line, wall time, peak RSS
    if not os.path.isfile(os.path.join(args.data, "train.parquet")):
        raise SystemExit("run `python examples/ml100k/prepare.py` first")
    env_note = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    specc_epochs = args.specc_epochs or args.epochs
    runs: dict[str, list[tuple]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "sasrec-ml100k.json")
        specc_spec(spec)
        sides = {
            f"specc (sasrec, {specc_epochs} epochs)": (
                [sys.executable, "-m", "specc.cli", "train", spec, "--data", f"{args.data}/train.parquet",
                 "--eval", f"{args.data}/valid.parquet", "--schema", f"{args.data}/schema.pbtxt", "--out",
                 f"{tmp}/run", "--epochs", str(specc_epochs), "--eval-every", str(specc_epochs), "--quiet"],
                "train_seconds"),
            f"RecTools SASRecModel (softmax, {args.epochs} epochs)": (
                [args.rectools_python, __file__, "--side", "rectools", "--data", args.data, "--epochs",
                 str(args.epochs)], "train_s"),
            f"Transformers4Rec 23.12 XLNet ({args.epochs} epochs)": (
                [args.t4rec_python, os.path.join(HERE, "t4rec_ml100k.py"), "--data", args.data, "--epochs",
                 str(args.epochs), "--threads", "1"], "train_wall_s"),
        }
        for repeat in range(args.repeats):
            for name, (cmd, train_key) in sides.items():
                if not os.path.isfile(cmd[0]):
                    print(f"skipped {name}: no {cmd[0]}", file=sys.stderr)
                    continue
                if os.path.exists(f"{tmp}/run"):
                    import shutil
                    shutil.rmtree(f"{tmp}/run")
                result, wall, rss = measure(cmd)
                runs.setdefault(name, []).append((result["ndcg@10"], result["recall@10"], result[train_key], wall))
                print(f"{name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    print(f"median of {args.repeats} run(s); {env_note}; load average now {os.getloadavg()[0]:.1f}")
    print("| run | NDCG@10 | Recall@10 | training s | whole process s |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        med = [statistics.median(r[i] for r in results) for i in range(4)]
        print(f"| {name} | {med[0]:.4f} | {med[1]:.4f} | {med[2]:.1f} | {med[3]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
