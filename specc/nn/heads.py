"""Task heads and their losses: next-item scoring over the catalog, binary classification, regression."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specc.nn.samplers import Sampler


class NextItemHead(nn.Module):
    """Scores hidden states against item embeddings (the tied input table, or its own table)."""

    def __init__(self, n_items: int, body_width: int, projection: tuple[int, int] | None, own_table: bool,
                 temperature: float, loss: str, label_smoothing: float = 0.0, negatives: int = 0,
                 sampler: str | None = None, logq_correction: bool = False, t: float = 0.0):
        super().__init__()
        self.n_items, self.temperature, self.loss_kind = n_items, temperature, loss
        self.label_smoothing, self.negatives, self.logq_correction, self.t = label_smoothing, negatives, logq_correction, t
        self.projection = nn.Linear(*projection) if projection else None
        self.table = nn.Parameter(torch.randn(n_items, body_width) * 0.02) if own_table else None
        self.sampler = Sampler(sampler or "uniform", n_items, negatives) if loss == "sampled_softmax" else None
        # item frequencies for the popularity sampler, filled by training (saved with the model)
        self.register_buffer("item_counts", torch.zeros(n_items), persistent=sampler == "popularity")

    def queries(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.projection(hidden) if self.projection is not None else hidden

    def loss(self, hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, backend: str,
             generator: torch.Generator | None = None) -> torch.Tensor:
        from specc.kernels import sampled_softmax_loss
        if self.loss_kind == "cross_entropy":
            return self.full_catalog_loss(hidden, weight, target, backend, self.label_smoothing)
        h, weight = _one_dtype(self.queries(hidden), weight)
        if self.loss_kind == "sampled_softmax":
            negatives, logq_neg, logq_target = self.sampler.sample(target, self.item_counts, generator)
            if not self.logq_correction:
                logq_neg = logq_target = None
            return sampled_softmax_loss(h, weight, target, negatives, logq_target, logq_neg,
                                        remove_accidental_hits=True, temperature=self.temperature, backend=backend,
                                        validate=False)   # targets are checked items, negatives sampled ids
        return self._binary_loss(h, weight, target, generator)

    def full_catalog_loss(self, hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                          backend: str, label_smoothing: float = 0.0) -> torch.Tensor:
        """Softmax cross-entropy over the whole catalog (also the eval loss, whatever the training loss). The
        padding id 0 is no class: it is never a target, nor recommended, so it takes no probability mass."""
        from specc.kernels import linear_cross_entropy, linear_cross_entropy_cpu
        from specc.kernels._common import use_triton
        h, weight = _one_dtype(self.queries(hidden), weight)
        weight, target = weight[1:], target - 1
        if use_triton(backend, h, weight):
            return linear_cross_entropy(h, weight, target, label_smoothing=label_smoothing,
                                        temperature=self.temperature, backend=backend, validate=False)
        return linear_cross_entropy_cpu(h, weight, target, label_smoothing=label_smoothing,
                                        temperature=self.temperature, validate=False)

    def _binary_loss(self, h, weight, target, generator):
        """BCE (SASRec) and gBCE (gSASRec, Petrov & Macdonald 2023) with per-position uniform negatives."""
        N, S = target.shape[0], self.negatives
        negatives = torch.randint(1, self.n_items, (N, S), generator=generator).to(target.device)
        pos = (h * weight[target]).sum(-1) / self.temperature
        neg = torch.einsum("nd,nsd->ns", h, weight[negatives]) / self.temperature
        beta = 1.0
        if self.loss_kind == "gbce":
            alpha = S / (self.n_items - 1)
            beta = alpha * (self.t * (1 - 1 / alpha) + 1 / alpha)
        neg_loss = F.softplus(neg).masked_fill(negatives == target[:, None], 0.0).sum(-1)
        return (-beta * F.logsigmoid(pos) + neg_loss).sum() / max(N, 1)   # 0 for a batch without targets

    def score(self, hidden: torch.Tensor, weight: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """[B, M] scores of the items `item_ids` [B, M], as `topk` ranks them."""
        h, weight = _one_dtype(self.queries(hidden) / self.temperature, weight)
        return torch.einsum("bd,bmd->bm", h, weight[item_ids])

    def topk(self, hidden: torch.Tensor, weight: torch.Tensor, k: int, exclude: torch.Tensor | None, backend: str):
        from specc.kernels import topk_scores
        h, weight = _one_dtype(self.queries(hidden) / self.temperature, weight)
        scores, ids = topk_scores(h, weight, k, exclude=exclude, backend=backend)
        return scores, ids


def _one_dtype(h: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused scoring kernels take hidden and weight in one dtype: autocast's (bf16) when it is on."""
    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    return h.to(dtype), weight.to(dtype)


def summarize(hidden: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """[B, L, d] -> [B, d]: the last real position, the first, or the mean over real positions."""
    if how == "first":
        return hidden[:, 0]
    if how == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), (lengths - 1).clamp(min=0)]
    valid = (torch.arange(hidden.shape[1], device=hidden.device)[None] < lengths[:, None]).to(hidden.dtype)
    return (hidden * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)


class ScalarHead(nn.Module):
    """Binary classification (logit) or regression (value) from a summary of the sequence."""

    def __init__(self, body_width: int, kind: str, summary: str):
        super().__init__()
        self.kind, self.summary = kind, summary
        self.linear = nn.Linear(body_width, 1)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.linear(summarize(hidden, lengths, self.summary)).squeeze(-1)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "binary_classification":
            return F.binary_cross_entropy_with_logits(output, target.float())
        return F.mse_loss(output, target.float())

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output) if self.kind == "binary_classification" else output


