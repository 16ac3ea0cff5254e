"""Test helpers: the repository's folders and random batches."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").rglob("*.json"))


def random_batch(model, B: int = 6, min_len: int = 2, seed: int = 0) -> dict:
    """A padded batch for every input and target column of `model`, with varied sequence lengths."""
    return model.random_batch(B, min_length=min_len, seed=seed, targets=True)


def random_relative_biases(model):
    """hstu's position and time biases start at 0, which would hide whatever flows through them: make them random."""
    import torch
    for name, param in model.named_parameters():
        if name.endswith(("position_bias", "time_bias")):
            torch.nn.init.normal_(param)
    return model


def descendants(pid: int) -> set[int]:
    """Every process under `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def train_on_prepared(tmp, rows, columns, *, categorical=(), continuous=(), max_length: int = 8,
                      evaluate: bool = True, name: str | None = None):
    """A tiny native-transformer run trained on `specc data prepare` output of the raw log `rows` (tuples of
    `columns`: session_id, item_id, any `categorical` and `continuous` columns, ts), so it records id mappings:
    tmp/data (the prepared splits), tmp/spec.json and tmp/run."""
    import json

    import polars as pl

    from specc.cli import main
    pl.DataFrame(rows, schema=columns, orient="row").write_csv(tmp / "log.csv")
    assert main(["data", "prepare", str(tmp / "log.csv"), "--out", str(tmp / "data"), "--item", "item_id",
                 "--time", "ts", "--session", "session_id", "--quiet",
                 *(["--categorical", ",".join(categorical)] if categorical else []),
                 *(["--continuous", ",".join(continuous)] if continuous else [])]) == 0
    spec = {"specc": 1, **({"name": name} if name else {}),
            "inputs": {"max_sequence_length": max_length,
                       "features": ["item_id-list", *(f"{c}-list" for c in (*categorical, *continuous))],
                       "embeddings": {"default_dim": 8}},
            "masking": {"kind": "causal"},
            "body": {"kind": "transformer", "architecture": "native", "d_model": 8, "n_head": 1, "n_layer": 1},
            "tasks": [{"kind": "next_item", "metrics": {"recall": [5]}}],
            "training": {"batch_size": 32, "epochs": 1, "seed": 1}}
    (tmp / "spec.json").write_text(json.dumps(spec))
    assert main(["train", str(tmp / "spec.json"), "--data", str(tmp / "data" / "train"), "--out", str(tmp / "run"),
                 "--quiet", *(["--eval", str(tmp / "data" / "valid")] if evaluate else [])]) == 0
    return tmp
