#!/usr/bin/env python
"""The quality matrix: Recall@10 / NDCG@10 of example specs on data sets of different shape, per training config.

    OMP_NUM_THREADS=1 python benchmarks/quality.py [--configs before,defaults] [--cases ...] [--specs sasrec,side]
        [--work /tmp/specc-quality] [--markdown FILE]

Data sets: the built-in synthetic data (`specc data synth`) at two sizes, MovieLens 100K (examples/ml100k/prepare.py
on ../shared/data/ml-100k; skipped when absent) and generated Markov-chain sessions of other shapes
(benchmarks/quality_data.py: catalogs of 100 to 100k items, short and long sessions, flat and skewed popularity,
side features that carry the chain's structure or are noise, few and many epochs). Where the Bayes-optimal ranking
is known the table shows Recall@10 as a share of it. Specs: `sasrec` (specs/sasrec.json, item ids only) and `side`
(the same with the data set's side features); both keep specc's training defaults except the case's epochs, so a
config says what changes: `before` is the defaults this matrix replaced (on today's code, whose continuous Linear starts as small as the
embeddings), `defaults` whatever specc/spec.py says now.
Results are cached per (case, fully resolved spec) in the work folder; each run trains in this process on one thread.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from quality_data import Shape, write  # noqa: E402

ML100K_SRC = next((p for p in (os.path.join(ROOT, *up, "shared", "data", "ml-100k") for up in (("..",), ("..", "..")))
                   if os.path.isdir(p)), "")   # ../shared from /work/main, ../../shared from /work/wt/<name>
ECOMMERCE_SIDE = ["category-list", "price-list"]
GENERATED_SIDE = ["category-list", "price-list"]
ML100K_SIDE = ["genre-list", "rating-list", "user_age", "user_gender", "user_occupation"]

# name: (source, epochs, max_sequence_length, side features)
CASES = {
    "synth-2k": (("synth", 2000, 500), 3, 20, ECOMMERCE_SIDE),
    "synth-8k": (("synth", 8000, 1000), 3, 20, ECOMMERCE_SIDE),
    "ml100k": (("ml100k",), 10, 50, ML100K_SIDE),
    "m100-long": (Shape(101, 2000, lengths=(10, 40), zipf=1.2, seed=1), 3, 20, GENERATED_SIDE),
    "m2k-noise": (Shape(2001, 4000, lengths=(5, 20), zipf=0.8, side="noise", seed=2), 3, 20, GENERATED_SIDE),
    "m10k-skew": (Shape(10001, 6000, lengths=(2, 8), zipf=1.5, successors=2, alpha=1.0, via_category=0.4, seed=3),
                  3, 20, GENERATED_SIDE),
    "m1k-20ep": (Shape(1001, 1000, lengths=(5, 15), successors=8, alpha=0.3, seed=4), 20, 20, GENERATED_SIDE),
    "m100k": (Shape(100001, 3000, lengths=(3, 15), via_category=0.4, seed=5), 3, 20, GENERATED_SIDE),
}

# overrides merged into the spec; `before` spells out the defaults in force before this matrix was made
CONFIGS = {
    "before": {"training": {"batch_size": 256, "optimizer": {"kind": "adamw", "lr": 1e-3, "weight_decay": 0.0},
                            "warmup": 0.05, "schedule": "linear", "final_lr": 0.0, "clip_grad_norm": 1.0},
               "body": {"dropout": 0.1}, "inputs": {"continuous": {"kind": "linear", "normalize": False}}},
    "defaults": {},
}


def merged(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def prepare(name: str, work: str) -> tuple[str, dict]:
    """The case's data folder (written once) and its optimum ({} when unknown)."""
    source = CASES[name][0]
    folder = os.path.join(work, "data", name)
    if isinstance(source, Shape):
        return folder, write(source, folder)
    if source[0] == "synth":
        from specc.synth import synthesize
        if not os.path.isfile(os.path.join(folder, "optimum.json")):
            synthesize(None, folder, n_train=source[1], n_valid=source[2])
        with open(os.path.join(folder, "optimum.json")) as f:
            return folder, json.load(f)
    if not os.path.isfile(os.path.join(folder, "valid.parquet")):
        subprocess.run([sys.executable, os.path.join(ROOT, "examples", "ml100k", "prepare.py"), "--src",
                        ML100K_SRC, "--out", folder], check=True, stdout=subprocess.DEVNULL)
    return folder, {}


def spec_for(case: str, spec: str) -> dict:
    with open(os.path.join(ROOT, "specs", "sasrec.json")) as f:
        base = json.load(f)
    _, epochs, max_len, side = CASES[case]
    for key in ("$schema", "schema"):
        base.pop(key)
    base["name"] = f"{spec}-{case}"
    base["inputs"] = {"max_sequence_length": max_len,
                      "features": ["item_id-list"] + (side if spec == "side" else [])}
    base["body"].pop("dropout")
    base["tasks"][0]["metrics"] = {"ndcg": [10], "recall": [10]}
    base["training"] = {"epochs": epochs}
    return base


def run(case: str, spec: str, config: str, work: str) -> dict:
    """Train one cell (cached in the work folder)."""
    import hashlib
    import tempfile
    from specc.spec import load_spec
    from specc.train import train
    spec_dict = merged(spec_for(case, spec), CONFIGS[config])
    resolved = json.dumps(load_spec(spec_dict).to_json_dict(), sort_keys=True)   # every default spelled out
    key = hashlib.sha1(resolved.encode()).hexdigest()[:12]
    cached = os.path.join(work, "results", f"{case}.{spec}.{key}.json")
    if os.path.isfile(cached):
        with open(cached) as f:
            return json.load(f)
    folder, best = prepare(case, work)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(spec_dict, os.path.join(folder, "train.parquet"), os.path.join(tmp, "run"),
                       eval_data=os.path.join(folder, "valid.parquet"), schema=os.path.join(folder, "schema.pbtxt"),
                       eval_every=10 ** 6, progress=False, log=lambda message: None)
        wall = time.perf_counter() - t0
    cell = {"recall@10": result["recall@10"], "ndcg@10": result["ndcg@10"], "wall_s": round(wall, 2),
            "optimum_recall@10": best.get("recall@10"), "config": CONFIGS[config]}
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached, "w") as f:
        json.dump(cell, f, indent=2)
    return cell


def table(cells: dict, cases: list[str], specs: list[str], configs: list[str]) -> str:
    """Markdown: a row per (case, spec), a column per config: R@10 / N@10 (share of the optimal recall)."""
    lines = ["| case | spec | " + " | ".join(configs) + " |", "|---|---|" + "---|" * len(configs)]
    shares: dict[str, list[float]] = {c: [] for c in configs}
    for case in cases:
        for spec in specs:
            row = []
            for config in configs:
                cell = cells.get((case, spec, config))
                if cell is None:
                    row.append("–")
                    continue
                text = f"{cell['recall@10']:.3f} / {cell['ndcg@10']:.3f}"
                if cell["optimum_recall@10"]:
                    share = cell["recall@10"] / cell["optimum_recall@10"]
                    shares[config].append(share)
                    text += f" ({share:.0%})"
                row.append(text)
            if any(r != "–" for r in row):
                lines.append(f"| {case} | {spec} | " + " | ".join(row) + " |")
    lines.append("| **mean share of optimum** | | " + " | ".join(
        f"**{sum(s) / len(s):.1%}** ({len(s)})" if s else "–" for s in shares.values()) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--specs", default="sasrec,side")
    parser.add_argument("--configs", default="before,defaults")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=JSON",
                        help="an extra config: overrides merged into the spec, e.g. "
                             "'lr3e-3={\"training\": {\"optimizer\": {\"lr\": 0.003}}}'")
    parser.add_argument("--work", default="/tmp/specc-quality")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    for item in args.config:
        name, _, text = item.partition("=")
        CONFIGS[name] = json.loads(text)
    import torch
    torch.set_num_threads(1)
    cases = [c for c in args.cases.split(",") if c != "ml100k" or os.path.isdir(ML100K_SRC)]
    specs, configs = args.specs.split(","), args.configs.split(",")
    cells = {}
    for config in configs:
        for case in cases:
            for spec in specs:
                cell = cells[(case, spec, config)] = run(case, spec, config, args.work)
                print(f"{config:>12} {case:>10} {spec:>6}: recall@10 {cell['recall@10']:.4f} ndcg@10 "
                      f"{cell['ndcg@10']:.4f} ({cell['wall_s']:.1f} s)", file=sys.stderr, flush=True)
    text = table(cells, cases, specs, configs)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
