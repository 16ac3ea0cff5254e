"""HSTU, the Hierarchical Sequential Transduction Unit (Zhai et al. 2024, "Actions Speak Louder than Words").

One layer, from the paper's equations:
    U, V, Q, K = Split(SiLU(f1(X)))
    A = SiLU(Q K^T + rab^{p,t}) / N, masked                          pointwise attention: no softmax
    Y = X + f2(Norm(A V) * U)
rab^{p,t} is a learned per-head bias of the bucketed relative position (p) and, when the model reads a timestamp
column, of the bucketed time between the two events (t). N is the maximum sequence length, a constant, so that a
position's output never depends on how many items follow it. specc adds a LayerNorm on each layer's input and one
on the body's output (as its other bodies have), and dropout on the branch before the residual.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

POSITION_BUCKETS = 32   # per direction: distances 0..15 exactly, then logarithmic up to the maximum length
TIME_BUCKETS = 64       # one per doubling of the time gap, |t_i - t_j| from 0 to 2^63 in any unit


def count_parameters(d_model: int, n_head: int, n_layer: int, time: bool) -> int:
    layer = 2 * 2 * d_model + (4 * d_model * d_model + 4 * d_model) + (d_model * d_model + d_model) \
        + 2 * POSITION_BUCKETS * n_head + (TIME_BUCKETS * n_head if time else 0)
    return n_layer * layer + 2 * d_model


def position_buckets(length: int, max_positions: int, device) -> torch.Tensor:
    """[L, L] bucket of the relative position j - i: 0..P-1 looking back (or at itself), P..2P-1 looking ahead."""
    steps = torch.arange(length, device=device)
    offset = steps[None] - steps[:, None]
    distance = offset.abs()
    exact = POSITION_BUCKETS // 2
    far = exact + (torch.log(distance.clamp(min=exact).float() / exact)
                   / math.log(max(max_positions, exact + 1) / exact) * (POSITION_BUCKETS - exact)).long()
    bucket = torch.where(distance < exact, distance, far.clamp(max=POSITION_BUCKETS - 1))
    return bucket + POSITION_BUCKETS * (offset > 0).long()


def time_buckets(times: torch.Tensor) -> torch.Tensor:
    """[B, L] timestamps -> [B, L, L] bucket of |t_i - t_j|: floor(log2(1 + gap))."""
    times = times.double()
    gap = (times[:, :, None] - times[:, None, :]).abs()
    return torch.log2(1 + gap).long().clamp(max=TIME_BUCKETS - 1)


class HstuLayer(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float, max_positions: int, time: bool):
        super().__init__()
        self.n_head, self.max_positions = n_head, max_positions
        self.norm_in = nn.LayerNorm(d_model)
        self.f1 = nn.Linear(d_model, 4 * d_model)
        self.norm_attention = nn.LayerNorm(d_model)
        self.f2 = nn.Linear(d_model, d_model)
        self.position_bias = nn.Parameter(torch.zeros(2 * POSITION_BUCKETS, n_head))
        self.time_bias = nn.Parameter(torch.zeros(TIME_BUCKETS, n_head)) if time else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, positions: torch.Tensor,
                times: torch.Tensor | None, query: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, D]; allowed [B|1, L, L] (i may see j), positions [L, L] and times [B, L, L] buckets.
        With `query` ([B] positions) only those rows are computed: [B, 1, D]."""
        B, L, D = x.shape
        u, v, q, k = F.silu(self.f1(self.norm_in(x))).split(D, dim=-1)
        bias = self.position_bias[positions][None]                      # [1, Q, L, H]
        if times is not None:
            bias = bias + self.time_bias[times]                         # [B, Q, L, H]
        if query is not None:
            rows = torch.arange(B, device=x.device)
            x, u, q = x[rows, query][:, None], u[rows, query][:, None], q[rows, query][:, None]
            allowed = allowed.expand(B, L, L)[rows, query][:, None]
            bias = bias.expand(B, L, L, self.n_head)[rows, query][:, None]
        heads = lambda t: t.view(B, t.shape[1], self.n_head, D // self.n_head).transpose(1, 2)  # noqa: E731
        score = heads(q) @ heads(k).transpose(-1, -2) + bias.permute(0, 3, 1, 2)
        weights = F.silu(score) * allowed[:, None].to(score.dtype) / self.max_positions
        attended = (weights @ heads(v)).transpose(1, 2).reshape(B, q.shape[1], D)
        return x + self.drop(self.f2(self.norm_attention(attended) * u))


class HstuBody(nn.Module):
    """[B, L, d] -> [B, L, d]; causal unless built bidirectional; `attention[b, i, j]` True lets i see j.
    `times` ([B, L], when built with `time=True`) adds the time bias. With `query` ([B] positions) -> [B, d] at
    those positions, the last layer computing only them."""

    takes_query = True

    def __init__(self, d_model: int, n_head: int, n_layer: int, dropout: float, max_positions: int, causal: bool,
                 time: bool = False):
        super().__init__()
        self.causal, self.time, self.max_positions = causal, time, max_positions
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(HstuLayer(d_model, n_head, dropout, max_positions, time) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, attention: torch.Tensor | None = None,
                query: torch.Tensor | None = None, times: torch.Tensor | None = None) -> torch.Tensor:
        L = x.shape[1]
        steps = torch.arange(L, device=x.device)
        if attention is not None:
            allowed = attention
        elif self.causal:   # right padding: real positions never see padded ones
            allowed = (steps[:, None] >= steps[None])[None]
        else:
            allowed = valid[:, None, :].expand(-1, L, -1)
        positions = position_buckets(L, self.max_positions, x.device)
        gaps = time_buckets(times) if self.time else None
        h = self.drop(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h, allowed, positions, gaps, query if i == last else None)
        return self.norm(h if query is None else h[:, 0])
