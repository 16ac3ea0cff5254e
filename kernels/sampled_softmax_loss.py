"""sampled_softmax_loss: softmax cross-entropy over [positive, shared negatives], positive at index 0.

    sampled_softmax_loss(hidden [N,d], weight [C,d], target [N], negatives [S], logq_target=None [N],
                         logq_negatives=None [S], remove_accidental_hits=True, temperature=1.0,
                         reduction="mean", backend="auto") -> loss

Per row i: z_i0 = h_i.w[t_i] / T - logq_t[i]; z_ij = h_i.w[neg_j] / T - logq_neg[j], set to -inf when
``remove_accidental_hits`` and neg_j == t_i; loss_i = logsumexp_j(z_i) - z_i0.

The negative rows are gathered once ([S, d], small); then the [N, S] logits are streamed through
the linear_cross_entropy kernels (HAS_BIAS for -logq, HIT_MASK for accidental hits): a blockwise
online LSE forward, and backward passes that recompute the tiles, one owning d(hidden), one
owning d(negative rows). The positive column is handled in torch (an [N] vector). Gradients for
the used weight rows (negatives and targets, duplicates included) are summed in fp32 over the
unique ids and scattered once into the weight gradient.
"""
from __future__ import annotations

import torch

from ._common import check_indices, check_same_dtype, kernel_dtype_ok, row_major, use_triton
from .linear_cross_entropy import (_linear_cross_entropy_bwd_dh_kernel, _linear_cross_entropy_bwd_dw_kernel,
                                   _linear_cross_entropy_fwd_kernel, _LOG2E, lse_backward, lse_forward, natural_lse)

__all__ = ["sampled_softmax_loss", "sampled_softmax_loss_reference"]

# The Triton kernels are shared with linear_cross_entropy (flags HAS_BIAS / HIT_MASK):
_sampled_softmax_loss_fwd_kernel = _linear_cross_entropy_fwd_kernel
_sampled_softmax_loss_bwd_dh_kernel = _linear_cross_entropy_bwd_dh_kernel
_sampled_softmax_loss_bwd_dw_kernel = _linear_cross_entropy_bwd_dw_kernel

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean() if loss.numel() else loss.sum()


class _SampledSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target, negatives, logq_target, logq_negatives, remove_hits, temperature,
                reduction):
        h = row_major(hidden)
        scale = 1.0 / temperature
        tgt = target.to(torch.int64).contiguous()
        neg = negatives.to(torch.int64).contiguous()
        wn = weight[neg].contiguous()                      # [S, d]
        bias = logq_negatives.float().contiguous() if logq_negatives is not None else None
        m_neg, log2l_neg = lse_forward(h, wn, scale, bias=bias, colids=neg if remove_hits else None,
                                       tgt=tgt if remove_hits else None)
        w_t = weight[tgt]
        z0 = (h.float() * w_t.float()).sum(-1) * scale
        if logq_target is not None:
            z0 = z0 - logq_target.float()
        # add the positive to the negatives' base-2 parts (row max, log2 sum)
        z0_2 = z0 * _LOG2E
        m = torch.maximum(m_neg, z0_2)
        neg2 = m_neg - m + log2l_neg                        # log2 of the negatives' sum, relative to m
        parts = torch.stack([m, torch.logaddexp2(neg2, z0_2 - m)])
        lse = natural_lse(parts)
        loss = lse - z0
        ctx.save_for_backward(h, wn, w_t, tgt, neg, bias, parts, neg2)
        ctx.cfg = (remove_hits, scale, reduction, weight.shape, weight.dtype)
        return _reduce(loss, reduction).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        h, wn, w_t, tgt, neg, bias, parts, neg2 = ctx.saved_tensors
        remove_hits, scale, reduction, wshape, wdtype = ctx.cfg
        N = h.shape[0]
        if reduction == "mean":
            g = (grad_out.float() / max(N, 1)).expand(N)
        else:
            g = grad_out.float().expand(N)
        g = g.contiguous()
        need_dh, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dh_neg, dwn = lse_backward(h, wn, parts, (g * scale).contiguous(), tgt, scale, bias=bias,
                                   colids=neg if remove_hits else None, need_dh=need_dh, need_dw=need_dw,
                                   dw_dtype=torch.float32)
        # d loss / d (h . w_t) = p(positive) - 1 = -p(negatives), which does not cancel when p(positive) ~ 1
        dz0 = -g * torch.exp2(neg2 - parts[1]) * scale
        dh = dw = None
        if need_dh:
            dh = (dh_neg + dz0[:, None] * w_t.float()).to(h.dtype)
        if need_dw:
            dwt = dz0[:, None] * h.float()
            ids = torch.cat([neg, tgt])
            uniq, inv = torch.unique(ids, return_inverse=True)
            acc = torch.zeros((uniq.numel(), h.shape[1]), dtype=torch.float32, device=h.device)
            acc.index_add_(0, inv, torch.cat([dwn, dwt]))
            dw = torch.zeros(wshape, dtype=wdtype, device=h.device)
            dw[uniq] = acc.to(wdtype)
        return dh, dw, None, None, None, None, None, None, None


def sampled_softmax_loss_reference(hidden, weight, target, negatives, logq_target=None, logq_negatives=None,
                                   remove_accidental_hits=True, temperature=1.0, reduction="mean",
                                   chunk_elems: int = 1 << 24):
    """Pure-torch sampled softmax (test truth and CPU production path); rows chunked, checkpointed."""
    N, S = hidden.shape[0], negatives.shape[0]
    rows = max(1, chunk_elems // max(S + 1, 1))

    def chunk(h, w, t, lq_t):
        pos = (h * w[t]).sum(-1, keepdim=True).float()
        negl = (h @ w[negatives].T).float()
        logits = torch.cat([pos, negl], dim=1) / temperature
        if lq_t is not None:
            logits[:, :1] = logits[:, :1] - lq_t.float()[:, None]
        if logq_negatives is not None:
            logits[:, 1:] = logits[:, 1:] - logq_negatives.float()[None, :]
        if remove_accidental_hits:
            hit = negatives[None, :] == t[:, None]
            logits[:, 1:] = logits[:, 1:].masked_fill(hit, float("-inf"))
        return torch.logsumexp(logits, dim=1) - logits[:, 0]

    if N <= rows:
        loss = chunk(hidden, weight, target, logq_target)
    else:
        from torch.utils.checkpoint import checkpoint
        parts = []
        for s in range(0, N, rows):
            lq = logq_target[s:s + rows] if logq_target is not None else None
            args = (hidden[s:s + rows], weight, target[s:s + rows], lq)
            parts.append(checkpoint(chunk, *args, use_reentrant=False) if torch.is_grad_enabled() else chunk(*args))
        loss = torch.cat(parts)
    return _reduce(loss, reduction).to(hidden.dtype)


def sampled_softmax_loss(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor,
                         logq_target: torch.Tensor | None = None, logq_negatives: torch.Tensor | None = None,
                         remove_accidental_hits: bool = True, temperature: float = 1.0, reduction: str = "mean",
                         backend: str = "auto", validate: bool = True) -> torch.Tensor:
    """Sampled softmax cross-entropy with shared negatives; the [N, S] logits are never materialised.

    logits_i = [h_i.w[target_i], h_i.w[negatives]] / temperature, minus logq_target / logq_negatives
    (logQ correction) when given; with ``remove_accidental_hits`` a negative equal to the row's target
    gets -inf. Cross-entropy with the positive at index 0; reduction "mean" | "sum" | "none".
    Gradients flow to hidden and to the weight rows that were used. logq tensors get no gradient.
    Target and negative ids must lie in [0, C); ``validate=False`` skips that check (one device sync).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"need hidden [N, d] and weight [C, d], got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if target.shape != hidden.shape[:1] or negatives.dim() != 1:
        raise ValueError(f"need target [N] and negatives [S], got {tuple(target.shape)} and {tuple(negatives.shape)} "
                         f"for N = {hidden.shape[0]}")
    for name, logq, n in (("logq_target", logq_target, hidden.shape[0]), ("logq_negatives", logq_negatives,
                                                                          negatives.shape[0])):
        if logq is not None and tuple(logq.shape) != (n,):
            raise ValueError(f"{name} must be [{n}], got {tuple(logq.shape)}")
    if not temperature > 0:
        raise ValueError("temperature must be > 0")
    check_same_dtype(hidden, weight)
    check_indices(("target", target, weight.shape[0], None), ("negatives", negatives, weight.shape[0], None),
                  ranges=validate)
    tensors = [t for t in (hidden, weight, target, negatives, logq_target, logq_negatives) if t is not None]
    if not use_triton(backend, *tensors) or not kernel_dtype_ok(hidden, weight) or hidden.shape[0] == 0 \
            or negatives.numel() == 0:
        return sampled_softmax_loss_reference(hidden, weight, target, negatives, logq_target, logq_negatives,
                                              remove_accidental_hits, temperature, reduction)
    return _SampledSoftmax.apply(hidden, weight, target, negatives, logq_target, logq_negatives,
                                 bool(remove_accidental_hits), float(temperature), reduction)
