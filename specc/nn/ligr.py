"""The LiGR transformer layer (Borisyuk et al. 2025, LinkedIn), as eSASRec (Tikhonovich et al. 2025) uses it.

A pre-LayerNorm layer whose two residual branches are gated by a learned, per-position sigmoid of the
normalised input, with a SwiGLU feed-forward:
    n = LN1(x);  h = x + sigmoid(G1 n) * Dropout(O MultiHeadAttention(n))
    m = LN2(h);  y = h + sigmoid(G2 m) * Dropout(W3 (SiLU(W1 m) * W2 m))
It runs inside NativeTransformer (learned positions, masks, the final LayerNorm and the query path).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specc.nn.bodies import at_positions, self_attention


def count_parameters(d_model: int, n_layer: int, d_ff: int, max_positions: int) -> int:
    d = d_model
    layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * (d * d + d) + 3 * d * d_ff
    return max_positions * d + n_layer * layer + 2 * d


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.drop(F.silu(self.gate(x)) * self.up(x)))


class LiGRBlock(nn.Module):
    """[B, L, D] -> [B, L, D]; with `query` ([B] positions) only those rows are computed: [B, 1, D]."""

    def __init__(self, d_model: int, n_head: int, d_ff: int, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.gate1 = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = SwiGLU(d_model, d_ff, dropout)
        self.gate2 = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
                query: torch.Tensor | None = None) -> torch.Tensor:
        n = self.norm1(x)
        a = self_attention(self.qkv(n), self.n_head, mask, is_causal, self.dropout if self.training else 0.0, query)
        if query is not None:
            x, n = at_positions(x, query), at_positions(n, query)
        h = x + torch.sigmoid(self.gate1(n)) * self.drop(self.out(a))
        m = self.norm2(h)
        return h + torch.sigmoid(self.gate2(m)) * self.drop(self.ff(m))
