"""XLNet's content stream in [B, L, d] layout: the same model as Hugging Face's XLNetModel over `inputs_embeds`.

Hugging Face's XLNet keeps activations as [L, B, ...] and runs every projection and attention product as an
einsum that permutes and copies its operands; on small recommendation models that layout costs more than the
arithmetic. This module computes the same function (relative positional attention, post-LayerNorm blocks,
dropout on the inputs, the positional encoding, attention probabilities and outputs) with batched matmuls
on [B, H, L, d_head] tensors. Parameter names and shapes are Hugging Face's, so checkpoints, parameter counts
and the equivalence test carry over; `hf:xlnet` still runs Hugging Face's own module.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from specc.nn.dropout import Dropout

# Hugging Face's ACT2FN entries for these names (importing ACT2FN costs a second of start-up)
_ACTIVATIONS = {"gelu": nn.GELU, "gelu_new": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU,
                "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh}


# XLNetConfig's defaults for what this module reads besides the resolved config (tests/test_xlnet_body.py keeps them
# equal to transformers'): a spec without body.config compiles and builds without importing transformers (~1 s)
CONFIG_DEFAULTS = {"clamp_len": -1, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "ff_activation": "gelu"}


def default_config(d_model: int, n_head: int, n_layer: int, d_ff: int, dropout: float) -> dict[str, Any]:
    """What specc.nn.hf.resolve_config gives an `xlnet` body without overrides (the same test keeps them equal)."""
    return {"model_type": "xlnet", "d_model": d_model, "n_head": n_head, "n_layer": n_layer, "d_inner": d_ff,
            "dropout": dropout, "vocab_size": 2, "pad_token_id": 0, "bos_token_id": None, "eos_token_id": None,
            "attn_type": "bi", "mem_len": None}


def runs_natively(architecture: str, config: dict[str, Any]) -> bool:
    """`xlnet` bodies whose activation this module has (others, and `hf:xlnet`, run Hugging Face's module).
    Compiling keeps XLNet's attention bidirectional over one segment (`attn_type="bi"`, no `bi_data`): specc's
    masks set what each position sees."""
    return architecture == "xlnet" and config.get("ff_activation", "gelu") in _ACTIVATIONS


def count_parameters(config: dict[str, Any]) -> int:
    d, ff = config["d_model"], config["d_inner"]
    attention = 5 * d * d + 5 * d + 2 * d          # q k v o r; three biases and two segment rows; LayerNorm
    feed_forward = 2 * d * ff + ff + d + 2 * d
    return d + config.get("vocab_size", 2) * d + config["n_layer"] * (attention + feed_forward)


def relative_positions(length: int, d_model: int, clamp_len: int, device) -> torch.Tensor:
    """[2L, d_model] sinusoids of the relative distances L, L-1, ..., -L+1 (XLNet's "bi" encoding)."""
    inv_freq = 1 / torch.pow(10000, torch.arange(0, d_model, 2, device=device).float() / d_model)
    distances = torch.arange(length, -length, -1, device=device).float()
    if clamp_len > 0:
        distances = distances.clamp(-clamp_len, clamp_len)
    angles = distances[:, None] * inv_freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class RelativeAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float, eps: float, std: float):
        super().__init__()
        d_head = d_model // n_head
        self.n_head, self.scale = n_head, 1 / math.sqrt(d_head)
        for name in ("q", "k", "v", "o", "r"):
            setattr(self, name, nn.Parameter(torch.randn(d_model, n_head, d_head) * std))
        for name in ("r_r_bias", "r_s_bias", "r_w_bias"):
            setattr(self, name, nn.Parameter(torch.randn(n_head, d_head) * std))
        self.seg_embed = nn.Parameter(torch.randn(2, n_head, d_head) * std)   # segments: unused on one sequence
        self.layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.dropout = Dropout(dropout)

    def forward(self, h: torch.Tensor, pos: torch.Tensor, blocked: torch.Tensor,
                query: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]; with `query` ([B] positions) only those rows are computed: [B, 1, D].
        `blocked`: [B, 1, L, L], the dtype's lowest value where a query may not see a key, else 0."""
        B, L, D = h.shape
        H = self.n_head
        qkv = h @ torch.cat([self.q, self.k, self.v], dim=1).flatten(1)
        q, k, v = qkv.view(B, L, 3, H, -1).permute(2, 0, 3, 1, 4)                 # [B, H, L, dh] each
        k_r = (pos @ self.r.flatten(1)).view(pos.shape[0], 2 * L, H, -1).transpose(1, 2)   # [B|1, H, 2L, dh]
        if query is not None:
            rows = torch.arange(B, device=h.device)
            h, q, blocked = h[rows, query][:, None], q[rows, :, query][:, :, None], blocked[rows, :, query][:, :, None]
        content = ((q + self.r_w_bias[:, None]) * self.scale) @ k.transpose(-1, -2)     # [B, H, Q, L]
        position = ((q + self.r_r_bias[:, None]) * self.scale) @ k_r.transpose(-1, -2)  # [B, H, Q, 2L]
        # column c of `position` is distance L - c; column j of the result must be distance i - j (query i)
        if query is None:   # row i holds distances L-i .. -L-i+1 from 0: a shifted view
            position = position.view(B, H, 2 * L, L)[:, :, 1:].reshape(B, H, L, 2 * L - 1)[..., :L]
        else:
            columns = L - query[:, None] + torch.arange(L, device=h.device)[None]          # [B, L]
            position = position.gather(-1, columns[:, None, None].expand(B, H, 1, L))
        score = content.add_(position).add_(blocked)
        prob = self.dropout(torch.softmax(score, dim=-1))
        out = (prob @ v).transpose(1, 2).reshape(B, q.shape[2], D) @ self.o.flatten(1).T
        return self.layer_norm(self.dropout(out) + h)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_inner: int, activation: str, dropout: float, eps: float, std: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.layer_1 = nn.Linear(d_model, d_inner)
        self.layer_2 = nn.Linear(d_inner, d_model)
        for linear in (self.layer_1, self.layer_2):
            nn.init.normal_(linear.weight, std=std)
            nn.init.zeros_(linear.bias)
        self.dropout = Dropout(dropout)
        self.activation_function = _ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.activation_function(self.layer_1(x)))
        return self.layer_norm(x + self.dropout(self.layer_2(y)))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.rel_attn = RelativeAttention(c.d_model, c.n_head, c.dropout, c.layer_norm_eps, c.initializer_range)
        self.ff = FeedForward(c.d_model, c.d_inner, c.ff_activation, c.dropout, c.layer_norm_eps, c.initializer_range)

    def forward(self, h, pos, blocked, query=None):
        return self.ff(self.rel_attn(h, pos, blocked, query))


class Stack(nn.Module):
    """Parameters named as in Hugging Face's XLNetModel (mask_emb and word_embedding serve its other inputs)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        c = SimpleNamespace(**_full_config(config))
        self.d_model, self.clamp_len = c.d_model, c.clamp_len
        self.mask_emb = nn.Parameter(torch.randn(1, 1, c.d_model) * c.initializer_range)
        self.word_embedding = nn.Embedding(c.vocab_size, c.d_model)
        nn.init.normal_(self.word_embedding.weight, std=c.initializer_range)
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.n_layer))
        self.dropout = Dropout(c.dropout)


def _full_config(config: dict[str, Any]) -> dict[str, Any]:
    """Every key the module reads: XLNetConfig's (from transformers where the spec overrides any of its keys)."""
    keys = {k for k in config if k != "model_type"}
    if keys <= set(default_config(1, 1, 1, 1, 0.0)):
        return {**CONFIG_DEFAULTS, **config}
    from transformers import AutoConfig
    return AutoConfig.for_model("xlnet", **{k: v for k, v in config.items() if k != "model_type"}).to_dict()


class XLNetBody(nn.Module):
    """[B, L, d] -> [B, L, d]; `attention[b, i, j]` True lets i see j (causal by default when `causal`).
    With `query` ([B] positions) -> [B, d] at those positions, the last layer computing only them."""

    takes_query = True

    def __init__(self, config: dict[str, Any], causal: bool):
        super().__init__()
        self.model = Stack(config)
        self.causal = causal

    def forward(self, x: torch.Tensor, valid: torch.Tensor, attention: torch.Tensor | None = None,
                query: torch.Tensor | None = None) -> torch.Tensor:
        B, L, _ = x.shape
        m = self.model
        steps = torch.arange(L, device=x.device)
        if attention is None and self.causal:
            attention = steps[:, None] >= steps[None]
        # a position never sees padding (nor what the pattern hides) but always sees itself, as in XLNet
        blocked = ~valid[:, None, :] if attention is None else ~valid[:, None, :] | ~attention
        blocked = (blocked & (steps[:, None] != steps[None]))[:, None]
        # added to the scores rather than filled in: a broadcast masked_fill is ~15x the time of an add on CPU
        blocked = torch.zeros(blocked.shape, dtype=x.dtype, device=x.device).masked_fill_(
            blocked, torch.finfo(x.dtype).min)
        pos = relative_positions(L, m.d_model, m.clamp_len, x.device).to(x.dtype)
        # XLNet drops out a separate copy of the positions for every sequence
        pos = m.dropout(pos.expand(B, -1, -1)) if m.training and m.dropout.p > 0 else pos[None]
        h = m.dropout(x)
        for i, layer in enumerate(m.layer):
            h = layer(h, pos, blocked, query if i == len(m.layer) - 1 else None)
        return m.dropout(h if query is None else h[:, 0])
