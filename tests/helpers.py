"""Test helpers: the repository's folders and random batches."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").rglob("*.json"))


def random_batch(model, B: int = 6, min_len: int = 2, seed: int = 0) -> dict:
    """A padded batch for every input and target column of `model`, with varied sequence lengths."""
    return model.random_batch(B, min_length=min_len, seed=seed, targets=True)
