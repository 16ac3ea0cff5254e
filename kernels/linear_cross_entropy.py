"""linear_cross_entropy: cross-entropy of softmax(hidden @ weight.T / T) over the full catalog.

    linear_cross_entropy(hidden [N,d], weight [C,d], target [N], ignore_index=-100, reduction="mean",
                         label_smoothing=0.0, temperature=1.0, backend="auto") -> loss

The [N, C] logits never exist in memory.
- Forward (``_linear_cross_entropy_fwd_kernel``): grid (row blocks, catalog splits). A program
  keeps its BLOCK_N hidden rows on chip and streams BLOCK_C catalog rows at a time: one tl.dot
  (fp32 accumulation), then an online log-sum-exp in base 2. Each program writes one partial
  (row max, log2 of the sum below it) per row; the splits are merged in torch. The pair is kept
  apart, not folded into one LSE, because the backward's exp2((s - max) - log2 sum) is then as
  exact as a softmax of the logits (an LSE of a large logit would round away its low bits). The target logit
  (an N-row gather) and, for label smoothing, the logit sum h . sum_j w_j are computed in torch.
- Backward recomputes logits tile by tile, in two passes that each own their output:
  ``_linear_cross_entropy_bwd_dh_kernel`` (grid over row blocks x catalog splits, fp32 d(hidden)
  accumulator; splits > 1 add with atomics into the small [N, d] buffer) and
  ``_linear_cross_entropy_bwd_dw_kernel`` (grid over catalog blocks; each program owns BLOCK_C
  rows of d(weight), loops over all N and stores them once: no atomics on the catalog gradient).
  dlogit = g_i / T * (softmax - (1 - eps) * onehot(target) - eps / C).
Extra memory: O(N * (splits + d)) floats, independent of C.
The same kernels (flags HAS_BIAS / HIT_MASK / TARGET_IN_CATALOG) serve sampled_softmax_loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._common import (check_indices, check_same_dtype, dot_precision, hidden_tile, interpreting, kernel_dtype_ok,
                      load_tile, new_empty, next_pow2, num_sms, row_major, scores_tile, span, split_range, tile_ptrs,
                      tl, triton, use_triton)

__all__ = ["linear_cross_entropy", "linear_cross_entropy_cpu", "linear_cross_entropy_reference"]

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------------- kernels
@triton.jit
def _logits2(s, cols, cmask, tgt, bias_ptr, colid_ptr, scale2, HAS_BIAS: tl.constexpr, HIT_MASK: tl.constexpr):
    """Logits tile in base-2 units from s = h @ wt: s * scale*log2(e) - bias*log2(e); -inf where masked."""
    s = s * scale2
    if HAS_BIAS:
        b = tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        s = s - b[None, :] * 1.4426950408889634
    s = tl.where(cmask[None, :], s, float("-inf"))
    if HIT_MASK:
        cid = tl.load(colid_ptr + cols, mask=cmask, other=-1)
        s = tl.where(cid[None, :] == tgt[:, None], float("-inf"), s)
    return s


@triton.jit
def _linear_cross_entropy_fwd_kernel(h_ptr, w_ptr, bias_ptr, colid_ptr, tgt_ptr, part_ptr,
                                     N, C, D, stride_h, stride_w, cols_per_split, scale2,
                                     HAS_BIAS: tl.constexpr, HIT_MASK: tl.constexpr,
                                     BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
                                     PRECISION: tl.constexpr):
    pid_s, rows, rmask, dofs, dmask, h = hidden_tile(h_ptr, N, D, stride_h, BLOCK_N, BLOCK_D)
    tgt = rows
    if HIT_MASK:
        tgt = tl.load(tgt_ptr + rows, mask=rmask, other=-1)
    m = tl.full([BLOCK_N], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_N], tl.float32)
    c_start, c_end = split_range(pid_s, cols_per_split, C)
    for c0 in range(c_start, c_end, BLOCK_C):
        cols, cmask = span(c0, BLOCK_C, c_end)
        s = _logits2(scores_tile(h, w_ptr, stride_w, cols, cmask, dofs, dmask, PRECISION), cols, cmask, tgt,
                     bias_ptr, colid_ptr, scale2, HAS_BIAS, HIT_MASK)
        m_new = tl.maximum(m, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l = l * tl.exp2(m - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), axis=1)
        m = m_new
    # part [2, splits, N]: the row max and log2 of the sum (both base 2; -inf for a row with no columns)
    tl.store(part_ptr + pid_s * N + rows, m, mask=rmask)
    tl.store(part_ptr + (tl.num_programs(1) + pid_s) * N + rows, tl.where(l > 0, tl.log2(l), float("-inf")),
             mask=rmask)


@triton.jit
def _row_terms(tgt_ptr, lse_ptr, g_ptr, rows, rmask, N):
    """Per-row backward inputs: (target id, row max and log2 sum (base 2, lse_ptr is [2, N]), grad scale g)."""
    tgt = tl.load(tgt_ptr + rows, mask=rmask, other=-1)
    m2 = tl.load(lse_ptr + rows, mask=rmask, other=0.0)
    log2l = tl.load(lse_ptr + N + rows, mask=rmask, other=0.0)
    g = tl.load(g_ptr + rows, mask=rmask, other=0.0)
    return tgt, m2, log2l, g


@triton.jit
def _dlogits(s, m2, log2l, g, cols, cmask, tgt, one_minus_eps, eps_over_c, TARGET_IN_CATALOG: tl.constexpr):
    """d loss / d (h.w) for a [rows, cols] tile; g already holds grad_i / T (0 for ignored rows)."""
    p = tl.exp2((s - m2[:, None]) - log2l[:, None])
    if TARGET_IN_CATALOG:
        p = p - tl.where(cols[None, :] == tgt[:, None], one_minus_eps, 0.0) \
            - tl.where(cmask[None, :], eps_over_c, 0.0)
    return p * g[:, None]


@triton.jit
def _linear_cross_entropy_bwd_dh_kernel(h_ptr, w_ptr, bias_ptr, colid_ptr, tgt_ptr, lse_ptr, g_ptr, dh_ptr,
                                        N, C, D, stride_h, stride_w, stride_dh, cols_per_split, scale2,
                                        one_minus_eps, eps_over_c,
                                        HAS_BIAS: tl.constexpr, HIT_MASK: tl.constexpr,
                                        TARGET_IN_CATALOG: tl.constexpr, ATOMIC: tl.constexpr,
                                        BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
                                        PRECISION: tl.constexpr):
    pid_s, rows, rmask, dofs, dmask, h = hidden_tile(h_ptr, N, D, stride_h, BLOCK_N, BLOCK_D)
    tgt, m2, log2l, g = _row_terms(tgt_ptr, lse_ptr, g_ptr, rows, rmask, N)
    acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    c_start, c_end = split_range(pid_s, cols_per_split, C)
    for c0 in range(c_start, c_end, BLOCK_C):
        cols, cmask = span(c0, BLOCK_C, c_end)
        w = load_tile(w_ptr, cols, cmask, stride_w, dofs, dmask)
        s = _logits2(tl.dot(h, tl.trans(w), input_precision=PRECISION), cols, cmask, tgt, bias_ptr, colid_ptr,
                     scale2, HAS_BIAS, HIT_MASK)
        ds = _dlogits(s, m2, log2l, g, cols, cmask, tgt, one_minus_eps, eps_over_c, TARGET_IN_CATALOG)
        acc += tl.dot(ds.to(w.dtype), w, input_precision=PRECISION)
    dptr, omask = tile_ptrs(dh_ptr, rows, rmask, stride_dh, dofs, dmask)
    if ATOMIC:
        tl.atomic_add(dptr, acc, mask=omask)
    else:
        tl.store(dptr, acc.to(dh_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _linear_cross_entropy_bwd_dw_kernel(h_ptr, w_ptr, bias_ptr, colid_ptr, tgt_ptr, lse_ptr, g_ptr, dw_ptr,
                                        N, C, D, stride_h, stride_w, stride_dw, scale2,
                                        one_minus_eps, eps_over_c,
                                        HAS_BIAS: tl.constexpr, HIT_MASK: tl.constexpr,
                                        TARGET_IN_CATALOG: tl.constexpr,
                                        BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
                                        PRECISION: tl.constexpr):
    cols, cmask = span(tl.program_id(0) * BLOCK_C, BLOCK_C, C)
    dofs, dmask = span(0, BLOCK_D, D)
    w = load_tile(w_ptr, cols, cmask, stride_w, dofs, dmask)
    wt = tl.trans(w)
    acc = tl.zeros([BLOCK_C, BLOCK_D], tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rows, rmask = span(n0, BLOCK_N, N)
        h = load_tile(h_ptr, rows, rmask, stride_h, dofs, dmask)
        tgt, m2, log2l, g = _row_terms(tgt_ptr, lse_ptr, g_ptr, rows, rmask, N)
        s = _logits2(tl.dot(h, wt, input_precision=PRECISION), cols, cmask, tgt, bias_ptr, colid_ptr, scale2,
                     HAS_BIAS, HIT_MASK)
        ds = _dlogits(s, m2, log2l, g, cols, cmask, tgt, one_minus_eps, eps_over_c, TARGET_IN_CATALOG)
        acc += tl.dot(tl.trans(ds.to(h.dtype)), h, input_precision=PRECISION)
    dptr, omask = tile_ptrs(dw_ptr, cols, cmask, stride_dw, dofs, dmask)
    tl.store(dptr, acc.to(dw_ptr.dtype.element_ty), mask=omask)


# ----------------------------------------------------------------------------------- launchers
def _config(D: int, dtype: torch.dtype, kind: str):
    """(BLOCK_N, BLOCK_C, BLOCK_D, num_warps, num_stages) per pass, chosen for H100 at d = 64..256.

    kind: "fwd" / "dh" (BLOCK_N hidden rows stay on chip, BLOCK_C catalog rows stream) or
    "dw" (BLOCK_C catalog rows stay on chip, BLOCK_N hidden rows stream)."""
    block_d = max(16, next_pow2(D))
    if interpreting():
        return 32, 64, block_d, 4, 1
    if dtype == torch.float32:
        return 64, 64, block_d, 4 if block_d <= 128 else 8, 2
    if block_d > 128:
        return {"fwd": (128, 64, block_d, 8, 2), "dh": (64, 64, block_d, 8, 2),
                "dw": (64, 64, block_d, 8, 2)}[kind]
    return {"fwd": (128, 128, block_d, 8, 3), "dh": (128, 64, block_d, 8, 3),
            "dw": (64, 128, block_d, 8, 3)}[kind]


def _splits(n_blocks: int, C: int, block_c: int, device) -> int:
    """Catalog splits so that row blocks x splits fills the GPU a few times over."""
    col_tiles = triton.cdiv(C, block_c)
    want = triton.cdiv(4 * num_sms(device), n_blocks)
    return max(1, min(want, col_tiles))


def lse_forward(h, w, scale, bias=None, colids=None, tgt=None):
    """The per-row log-sum-exp of (h @ w.T) * scale - bias, hits (colids == tgt) masked, as base-2 parts:
    fp32 [2, N] = (row max, log2 of the sum of 2^(s - max)); `natural_lse` folds them. A row with no columns
    gets max 0 and log2 sum -inf."""
    N, D = h.shape
    C = w.shape[0]
    BN, BC, BD, warps, stages = _config(D, h.dtype, "fwd")
    n_blocks = triton.cdiv(N, BN)
    splits = _splits(n_blocks, C, BC, h.device)
    cols_per_split = triton.cdiv(triton.cdiv(C, splits), BC) * BC
    splits = triton.cdiv(C, cols_per_split)
    part = new_empty((2, splits, N), torch.float32, h.device)
    dummy = part
    _linear_cross_entropy_fwd_kernel[(n_blocks, splits)](
        h, w, bias if bias is not None else dummy, colids if colids is not None else dummy,
        tgt if tgt is not None else dummy, part, N, C, D, h.stride(0), w.stride(0), cols_per_split,
        float(scale) * _LOG2E, HAS_BIAS=bias is not None, HIT_MASK=colids is not None,
        BLOCK_N=BN, BLOCK_C=BC, BLOCK_D=BD, PRECISION=dot_precision(h.dtype), num_warps=warps, num_stages=stages)
    m = part[0].amax(0)
    m = torch.where(m == float("-inf"), 0.0, m)
    log2l = part[1, 0] if splits == 1 else torch.log2(torch.exp2(part[0] - m + part[1]).sum(0))
    return torch.stack([m, log2l])


def natural_lse(parts: torch.Tensor) -> torch.Tensor:
    """[2, N] base-2 parts (row max, log2 sum) -> the natural-log LSE [N]."""
    return (parts[0] + parts[1]) * _LN2


def lse_backward(h, w, lse, g, tgt, scale, bias=None, colids=None, target_in_catalog=False,
                 one_minus_eps=1.0, eps_over_c=0.0, need_dh=True, need_dw=True, dw_dtype=None):
    """d(hidden) (fp32) and d(weight) (dw_dtype, default weight.dtype) for dlogits = g*(p - target terms).

    ``lse``: the softmax normaliser as [2, N] base-2 parts (see lse_forward), finite for every row.
    ``g`` [N] fp32 already includes the 1/T factor (scale) and zeros for ignored rows."""
    lse = lse.contiguous()
    N, D = h.shape
    C = w.shape[0]
    scale2 = float(scale) * _LOG2E
    dummy = lse
    common = dict(HAS_BIAS=bias is not None, HIT_MASK=colids is not None, TARGET_IN_CATALOG=target_in_catalog,
                  PRECISION=dot_precision(h.dtype))
    b = bias if bias is not None else dummy
    cid = colids if colids is not None else dummy
    dh = dw = None
    if need_dh:
        BN, BC, BD, warps, stages = _config(D, h.dtype, "dh")
        n_blocks = triton.cdiv(N, BN)
        splits = _splits(n_blocks, C, BC, h.device)
        cols_per_split = triton.cdiv(triton.cdiv(C, splits), BC) * BC
        splits = triton.cdiv(C, cols_per_split)
        atomic = splits > 1
        dh = torch.zeros((N, D), dtype=torch.float32, device=h.device) if atomic else \
            new_empty((N, D), torch.float32, h.device)
        _linear_cross_entropy_bwd_dh_kernel[(n_blocks, splits)](
            h, w, b, cid, tgt, lse, g, dh, N, C, D, h.stride(0), w.stride(0), dh.stride(0), cols_per_split,
            scale2, float(one_minus_eps), float(eps_over_c), ATOMIC=atomic, BLOCK_N=BN, BLOCK_C=BC, BLOCK_D=BD,
            num_warps=warps, num_stages=stages, **common)
    if need_dw:
        BN, BC, BD, warps, stages = _config(D, h.dtype, "dw")
        dw = new_empty((C, D), dw_dtype or w.dtype, w.device)
        _linear_cross_entropy_bwd_dw_kernel[(triton.cdiv(C, BC),)](
            h, w, b, cid, tgt, lse, g, dw, N, C, D, h.stride(0), w.stride(0), dw.stride(0), scale2,
            float(one_minus_eps), float(eps_over_c), BLOCK_N=BN, BLOCK_C=BC, BLOCK_D=BD,
            num_warps=warps, num_stages=stages, **common)
    return dh, dw


def _row_grad_scale(grad_out, valid, reduction, n_valid, scale):
    if reduction == "none":
        g = grad_out.float()
    elif reduction == "sum":
        g = grad_out.float().expand(valid.shape)
    else:
        g = (grad_out.float() / n_valid.clamp(min=1)).expand(valid.shape)
    return (torch.where(valid, g, 0.0) * scale).contiguous()


# ----------------------------------------------------------------------------------- autograd
class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target, ignore_index, reduction, label_smoothing, temperature):
        h, w = row_major(hidden), row_major(weight)
        _N, C = h.shape[0], w.shape[0]
        scale = 1.0 / temperature
        valid = target != ignore_index
        tgt = torch.where(valid, target, 0).to(torch.int64).contiguous()
        parts = lse_forward(h, w, scale)
        lse = natural_lse(parts)
        z_t = (h.float() * w[tgt].float()).sum(-1) * scale
        loss = lse - z_t
        eps = float(label_smoothing)
        if eps > 0:
            z_sum = (h.float() @ w.sum(0, dtype=torch.float32)) * scale
            loss = (1 - eps) * loss + eps * (lse - z_sum / C)
        loss = torch.where(valid, loss, 0.0)
        n_valid = valid.sum()
        ctx.save_for_backward(h, w, tgt, parts, valid, n_valid)
        ctx.cfg = (reduction, eps, scale)
        if reduction == "none":
            out = loss
        elif reduction == "sum":
            out = loss.sum()
        else:
            out = loss.sum() / n_valid.clamp(min=1)
        return out.to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        h, w, tgt, parts, valid, n_valid = ctx.saved_tensors
        reduction, eps, scale = ctx.cfg
        C = w.shape[0]
        g = _row_grad_scale(grad_out, valid, reduction, n_valid, scale)
        dh, dw = lse_backward(h, w, parts, g, tgt, scale, target_in_catalog=True, one_minus_eps=1.0 - eps,
                              eps_over_c=eps / C, need_dh=ctx.needs_input_grad[0], need_dw=ctx.needs_input_grad[1])
        if dh is not None:
            dh = dh.to(h.dtype)
        return dh, dw, None, None, None, None, None


# ----------------------------------------------------------------------------------- reference
def linear_cross_entropy_reference(hidden, weight, target, ignore_index=-100, reduction="mean",
                                   label_smoothing=0.0, temperature=1.0, chunk_elems: int = 1 << 24):
    """Pure-torch linear cross-entropy (test truth and CPU production path).

    Rows are processed in chunks of about ``chunk_elems`` logits, each under activation
    checkpointing, so memory stays O(chunk) rather than O(N*C) in forward and backward.
    Mean over non-ignored rows; 0 (with zero grads) when every row is ignored."""
    N, C = hidden.shape[0], weight.shape[0]
    valid = target != ignore_index
    rows = max(1, chunk_elems // max(C, 1))

    def chunk_loss(h, w, t):
        logits = (h @ w.T).to(torch.promote_types(h.dtype, torch.float32)) / temperature
        return F.cross_entropy(logits, t.long(), ignore_index=ignore_index, reduction="none",
                               label_smoothing=label_smoothing)

    if N <= rows:
        losses = chunk_loss(hidden, weight, target)
    else:
        from torch.utils.checkpoint import checkpoint
        parts = []
        for s in range(0, N, rows):
            args = (hidden[s:s + rows], weight, target[s:s + rows])
            parts.append(checkpoint(chunk_loss, *args, use_reentrant=False)
                         if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
                         else chunk_loss(*args))
        losses = torch.cat(parts)
    losses = torch.where(valid, losses, 0.0)
    if reduction == "none":
        out = losses
    elif reduction == "sum":
        out = losses.sum()
    else:
        out = losses.sum() / valid.sum().clamp(min=1)
    return out.to(hidden.dtype)


def _check_args(hidden, weight, target, ignore_index, reduction, label_smoothing, temperature, validate):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"need hidden [N, d] and weight [C, d], got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if target.shape != hidden.shape[:1]:
        raise ValueError(f"target must be [N]={hidden.shape[0]}, got {tuple(target.shape)}")
    if not (0.0 <= label_smoothing <= 1.0) or not temperature > 0:
        raise ValueError("need 0 <= label_smoothing <= 1 and temperature > 0")
    check_same_dtype(hidden, weight)
    check_indices(("target", target, weight.shape[0], ignore_index), ranges=validate)


# ----------------------------------------------------------------------------------- CPU path
class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """The gradient of a mean or sum of row losses is known up to the scalar grad_out, so the forward computes
    it: each chunk of logits is made once, turned into its softmax in place, and multiplied into d(hidden) and
    d(weight) while it is in cache. The backward only scales."""

    @staticmethod
    def forward(ctx, hidden, weight, target, ignore_index, reduction, eps, temperature, rows, grad_mode):
        N, C = hidden.shape[0], weight.shape[0]
        acc = torch.promote_types(hidden.dtype, torch.float32)
        need_dh, need_dw = (grad_mode and need for need in ctx.needs_input_grad[:2])
        valid = target != ignore_index
        tgt = torch.where(valid, target, 0)
        n_valid = valid.sum().clamp(min=1).to(acc)
        scale = 1.0 / temperature
        row_grad = valid.to(acc) * (scale / n_valid if reduction == "mean" else scale)
        losses = torch.empty(N, dtype=acc, device=hidden.device)
        dh = torch.empty(hidden.shape, dtype=acc, device=hidden.device) if need_dh else None
        dw = torch.zeros(weight.shape, dtype=acc, device=hidden.device) if need_dw else None
        for s in range(0, N, rows):
            h, t = hidden[s:s + rows], tgt[s:s + rows]
            z = (h @ weight.T).to(acc).mul_(scale)
            z_target = z.gather(1, t[:, None])[:, 0]
            z_mean = z.mean(1) if eps else None
            z_max = z.amax(1, keepdim=True)
            p = z.sub_(z_max).exp_()
            total = p.sum(1, keepdim=True)
            lse = (total.log() + z_max)[:, 0]
            losses[s:s + rows] = (1 - eps) * (lse - z_target) + (eps * (lse - z_mean) if eps else 0.0)
            if need_dh or need_dw:   # dlogit = g / T * (softmax - (1 - eps) * onehot(target) - eps / C)
                p.div_(total)
                if eps:
                    p.sub_(eps / C)
                p[torch.arange(len(t), device=p.device), t] -= 1 - eps
                p = p.mul_(row_grad[s:s + rows, None]).to(hidden.dtype)
                if need_dh:
                    dh[s:s + rows] = p @ weight
                if need_dw:
                    dw.add_(p.T @ h)
        loss = torch.where(valid, losses, 0.0).sum()
        ctx.save_for_backward(dh, dw)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return (loss / n_valid if reduction == "mean" else loss).to(hidden.dtype)

    @staticmethod
    @once_differentiable   # the gradients were formed without a graph: no second derivatives
    def backward(ctx, grad_out):
        dh, dw = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (None if dh is None else (dh * grad_out.to(dh.dtype)).to(h_dtype),
                None if dw is None else (dw * grad_out.to(dw.dtype)).to(w_dtype), *[None] * 7)


def linear_cross_entropy_cpu(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                             ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                             temperature: float = 1.0, chunk_elems: int = 1 << 19,
                             validate: bool = True) -> torch.Tensor:
    """``linear_cross_entropy`` in plain torch, built for CPU training (also correct elsewhere): logits in
    cache-sized row chunks, gradients formed in the forward pass (no logits kept, none recomputed).
    reduction "none" goes to the reference, whose per-row gradients are only known in the backward."""
    _check_args(hidden, weight, target, ignore_index, reduction, label_smoothing, temperature, validate)
    if reduction == "none":
        return linear_cross_entropy_reference(hidden, weight, target, ignore_index, reduction, label_smoothing,
                                              temperature)
    rows = max(32, chunk_elems // max(weight.shape[0], 1))
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, target, ignore_index, reduction,
                                            float(label_smoothing), float(temperature), rows, torch.is_grad_enabled())


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, ignore_index: int = -100,
                         reduction: str = "mean", label_smoothing: float = 0.0, temperature: float = 1.0,
                         backend: str = "auto", validate: bool = True) -> torch.Tensor:
    """Cross-entropy of softmax((hidden @ weight.T) / temperature) over all C classes, without [N, C] logits.

    hidden [N, d], weight [C, d] of one dtype, target [N] (int class ids in [0, C); ``ignore_index`` rows are
    excluded). reduction: "mean" (over non-ignored rows; 0 if none), "sum" or "none" ([N], 0 at ignored rows).
    label_smoothing as in torch.nn.functional.cross_entropy. fp32/bf16/fp16 inputs, fp32 accumulation.
    The loss has hidden's dtype. ``validate=False`` skips the target range check (one device sync).
    """
    _check_args(hidden, weight, target, ignore_index, reduction, label_smoothing, temperature, validate)
    if not use_triton(backend, hidden, weight, target) or not kernel_dtype_ok(hidden, weight) or hidden.shape[0] == 0:
        return linear_cross_entropy_reference(hidden, weight, target, ignore_index, reduction, label_smoothing,
                                              temperature)
    return _LinearCrossEntropy.apply(hidden, weight, target, ignore_index, reduction, float(label_smoothing),
                                     float(temperature))
