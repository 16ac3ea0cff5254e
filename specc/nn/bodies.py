"""Sequence bodies: specc's native transformer, GRU and MLP (Hugging Face bodies live in hf.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specc.nn.dropout import dropout as fast_dropout

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "none": nn.Identity}


def capabilities(kind: str, architecture: str | None) -> set[str]:
    """What attention patterns a body can run: "causal", "bidirectional", "plm" (a per-batch pattern)."""
    if kind in ("gru", "mlp"):
        return {"causal"}
    if kind == "hstu" or architecture in ("native", "ligr"):
        return {"causal", "bidirectional", "plm"}
    from specc.nn.hf import capabilities as hf_capabilities
    return hf_capabilities(architecture)


def mlp(widths: list[int], activation: str, dropout: float, last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(widths) - 2:
            layers.append(_ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class NativeBlock(nn.Module):
    """Pre-LayerNorm transformer block on scaled_dot_product_attention."""

    def __init__(self, d_model: int, n_head: int, d_ff: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
                query: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]; with `query` ([B] positions) only those rows are computed: [B, 1, D]."""
        a = self_attention(self.qkv(self.norm1(x)), self.n_head, mask, is_causal, self.dropout if self.training
                           else 0.0, query)
        x = (x if query is None else at_positions(x, query)) + self.drop(self.out(a))
        return x + self.drop(self.ff(self.norm2(x)))


def at_positions(x: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """[B, L, ...] -> [B, 1, ...]: each row at its own position."""
    return x[torch.arange(x.shape[0], device=x.device), query][:, None]


def self_attention(qkv: torch.Tensor, n_head: int, mask: torch.Tensor | None, is_causal: bool, dropout: float,
                   query: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention from packed [B, L, 3D] queries, keys and values -> [B, L, D] (with `query`, [B]
    positions: [B, 1, D], only those rows computed)."""
    B, L, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    q, k, v = qkv.view(B, L, 3, n_head, D // n_head).permute(2, 0, 3, 1, 4)
    if query is not None:
        q = q[torch.arange(B, device=qkv.device), :, query][:, :, None]
    if dropout > 0 and qkv.device.type == "cpu":
        a = _attention_with_dropout(q, k, v, mask, is_causal, dropout)
    else:
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout)
    return a.transpose(1, 2).reshape(B, q.shape[2], D)


def _attention_with_dropout(q, k, v, mask: torch.Tensor | None, is_causal: bool, p: float) -> torch.Tensor:
    """Attention with dropout on its probabilities, as scaled_dot_product_attention computes it, with specc's
    CPU dropout mask: torch's CPU attention falls back to its unfused path when dropout_p > 0 and draws one
    Bernoulli sample per probability (5x the time of the attention itself at [128, 4, 50, 50])."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)   # scaling q: fewer values than the scores
    if is_causal:
        L, S = scores.shape[-2:]
        mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    if mask is None:
        return fast_dropout(torch.softmax(scores, dim=-1), p) @ v
    if mask.dtype == torch.bool:
        # the small mask made additive: a broadcast masked_fill over the scores is ~15x the time of an add on CPU
        mask = torch.zeros(mask.shape, dtype=scores.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    probs = torch.softmax(scores.add_(mask), dim=-1)
    if not is_causal:
        sees_nothing = (mask == float("-inf")).all(-1, keepdim=True)
        if sees_nothing.any():   # such a query gets zeros, as in torch's attention
            probs = probs.masked_fill(sees_nothing, 0.0)
    return fast_dropout(probs, p) @ v


class NativeTransformer(nn.Module):
    """specc's own encoder: learned positions, pre-LN blocks, causal or bidirectional. `block` is the layer
    (NativeBlock, or LiGRBlock from specc.nn.ligr): any module of the same arguments and call."""

    def __init__(self, d_model: int, n_head: int, n_layer: int, d_ff: int, dropout: float, max_positions: int,
                 causal: bool, block: type[nn.Module] = NativeBlock):
        super().__init__()
        self.causal = causal
        self.positions = nn.Embedding(max_positions, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(block(d_model, n_head, d_ff, dropout) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)

    # the last block can compute just the positions the caller reads (inference: one per row)
    takes_query = True

    def forward(self, x: torch.Tensor, valid: torch.Tensor, attention: torch.Tensor | None = None,
                query: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]; with `query` ([B] positions, not with `attention`) -> [B, D] at those positions."""
        L = x.shape[1]
        x = self.drop(x + self.positions.weight[:L])
        if attention is not None:
            mask, is_causal = attention[:, None], False
        elif self.causal:
            # right padding: real positions never see padded ones under a causal mask
            mask, is_causal = None, True
        else:
            keys = valid.clone()
            keys[:, 0] = True   # an empty row attends to something rather than producing NaN
            mask, is_causal = keys[:, None, None, :], False
        for block in self.blocks[:-1] if query is not None else self.blocks:
            x = block(x, mask, is_causal)
        if query is None:
            return self.norm(x)
        if self.causal:   # the one query row sees the keys up to its position
            mask, is_causal = (torch.arange(L, device=x.device)[None] <= query[:, None])[:, None, None, :], False
        return self.norm(self.blocks[-1](x, mask, is_causal, query)[:, 0])


class GruBody(nn.Module):
    def __init__(self, d_model: int, n_layer: int, dropout: float):
        super().__init__()
        self.gru = nn.GRU(d_model, d_model, n_layer, batch_first=True, dropout=dropout if n_layer > 1 else 0.0)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
        return self.gru(x)[0]


class MlpBody(nn.Module):
    """No sequence mixing: a per-position MLP (a baseline)."""

    def __init__(self, input_width: int, dims: list[int], activation: str, dropout: float):
        super().__init__()
        self.mlp = mlp([input_width, *dims], activation, dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlp(x)
