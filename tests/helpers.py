"""Test helpers: the repository's folders and random batches."""
from __future__ import annotations

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
