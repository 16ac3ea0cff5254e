"""Test helpers: random batches for a plan, and the repository's folders."""
from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").rglob("*.json"))


def random_batch(model, B: int = 6, min_len: int = 2, generator: torch.Generator | None = None) -> dict:
    """A padded batch for every input and target column of `model`, with varied sequence lengths."""
    plan = model.plan
    L = plan.inputs.max_sequence_length
    g = generator or torch.Generator().manual_seed(0)
    lengths = torch.randint(min_len, L + 1, (B,), generator=g)
    lengths[0] = L
    valid = torch.arange(L)[None] < lengths[:, None]
    rows = {f.column: next((t.rows for t in plan.inputs.tables if t.name == f.table), None)
            for f in plan.inputs.features}
    batch = {}
    for f in plan.inputs.features:
        if f.role == "categorical":
            v = torch.randint(1, rows[f.column], (B, L) if f.sequential else (B,), generator=g)
        else:
            v = torch.rand((B, L) if f.sequential else (B,), generator=g)
        batch[f.column] = v * valid if f.sequential else v
    for t in plan.tasks:
        if t.kind == "binary_classification":
            batch[t.target] = torch.randint(0, 2, (B,), generator=g)
        elif t.kind == "regression":
            batch[t.target] = torch.rand(B, generator=g)
    return batch
