"""Negative samplers for sampled losses. Every sampler returns log expected counts ("logQ") so corrections agree.

For a negative set drawn from q, the expected number of copies of item i in it is e(i); a sampled softmax
subtracts log e(i) from the logit of every candidate (the target and the negatives), as in TensorFlow's
sampled_softmax_loss. Ids 1..n_items-1 are real items; 0 is padding and never sampled.
"""
from __future__ import annotations

import math

import torch


class Sampler:
    """kind: uniform, log_uniform (ids sorted by frequency, 1 = most frequent), popularity, in_batch, mixed."""

    def __init__(self, kind: str, n_items: int, n_negatives: int):
        self.kind, self.n_items, self.n = kind, n_items, n_negatives

    def probabilities(self, counts: torch.Tensor | None = None) -> torch.Tensor:
        """q over ids [n_items] for the catalog samplers (q[0] = 0)."""
        C = self.n_items
        ids = torch.arange(C, dtype=torch.float64)
        if self.kind == "log_uniform":
            q = (torch.log(ids + 1) - torch.log(ids)) / math.log(C)   # rank r = id - 1: log((r+2)/(r+1)) / log(C)
        elif self.kind == "popularity":
            q = (counts.double().cpu() if counts is not None else torch.zeros(C, dtype=torch.float64)) + 1.0
        else:
            q = torch.ones(C, dtype=torch.float64)
        q[0] = 0.0
        return q / q.sum()

    def sample(self, targets: torch.Tensor, counts: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(negatives [S], logq_negatives [S], logq_targets [N]) for the flat targets of a batch."""
        device = targets.device
        C = self.n_items
        batch_counts = None
        if self.kind in ("in_batch", "mixed"):
            batch_counts = torch.bincount(targets, minlength=C).double()
        drawn = None
        if self.kind != "in_batch":
            if self.kind == "uniform" or self.kind == "mixed":
                drawn = torch.randint(1, C, (self.n,), generator=generator)
            elif self.kind == "log_uniform":
                u = torch.rand(self.n, generator=generator, dtype=torch.float64)
                drawn = (torch.exp(u * math.log(C)).floor().long()).clamp(1, C - 1)
            else:
                drawn = torch.multinomial(self.probabilities(counts).float(), self.n, replacement=True,
                                          generator=generator)
            drawn = drawn.to(device)
        expected = torch.zeros(C, dtype=torch.float64, device=device)
        if drawn is not None:
            q = self.probabilities(counts).to(device) if self.kind != "mixed" else \
                Sampler("uniform", C, self.n).probabilities().to(device)
            expected += self.n * q
        if batch_counts is not None:
            expected += batch_counts
        negatives = torch.cat([t for t in (targets if batch_counts is not None else None, drawn) if t is not None])
        log_expected = torch.log(expected.clamp(min=1e-30)).float()
        return negatives, log_expected[negatives], log_expected[targets]
