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
