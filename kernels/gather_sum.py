"""gather_sum: look up one id tensor per embedding table (all of one dim) and sum the rows.

    gather_sum(weights, ids, padding_idx=None, backend="auto") -> [..., d]

Forward: one launch handles up to 4 tables (fixed-arity pointer slots, NUM_TABLES constexpr);
rows are summed in fp32 registers and the output is written once. More than 4 tables: further
launches accumulate into the output (ACCUMULATE).
Backward: every table receives the same incoming gradient; each table's gradient is a segment
reduction over its sorted ids (shared with gather_concat; deterministic, no atomics, O(#ids)
temporaries besides the table gradient itself).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._common import gather_rows, kernel_dtype_ok, new_empty, next_pow2, row_major, tile_2d, tile_ptrs, tl, \
    triton, use_triton
from .gather_concat import check_gather_args, flat_ids_of, gather_backward

__all__ = ["gather_sum", "gather_sum_reference"]

_MAX_TABLES = 4


@triton.jit
def _gather_rows(w_ptr, ids_ptr, stride_w, rows, rmask, cols, cmask, padding_idx, HAS_PAD: tl.constexpr):
    return gather_rows(w_ptr, ids_ptr, stride_w, rows, rmask, cols, cmask, padding_idx, HAS_PAD).to(tl.float32)


@triton.jit
def _gather_sum_fwd_kernel(out_ptr, w0, w1, w2, w3, i0, i1, i2, i3, s0, s1, s2, s3, M, D, stride_out,
                           padding_idx, NUM_TABLES: tl.constexpr, HAS_PAD: tl.constexpr,
                           ACCUMULATE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows, rmask, cols, cmask = tile_2d(M, D, BLOCK_M, BLOCK_D)
    acc = _gather_rows(w0, i0, s0, rows, rmask, cols, cmask, padding_idx, HAS_PAD)
    if NUM_TABLES > 1:
        acc += _gather_rows(w1, i1, s1, rows, rmask, cols, cmask, padding_idx, HAS_PAD)
    if NUM_TABLES > 2:
        acc += _gather_rows(w2, i2, s2, rows, rmask, cols, cmask, padding_idx, HAS_PAD)
    if NUM_TABLES > 3:
        acc += _gather_rows(w3, i3, s3, rows, rmask, cols, cmask, padding_idx, HAS_PAD)
    optr, omask = tile_ptrs(out_ptr, rows, rmask, stride_out, cols, cmask)
    if ACCUMULATE:
        acc += tl.load(optr, mask=omask, other=0.0).to(tl.float32)
    tl.store(optr, acc.to(out_ptr.dtype.element_ty), mask=omask)


def _launch_fwd(out2d, weights, flats, padding_idx):
    M, D = out2d.shape
    if M == 0:
        return
    block_d = min(next_pow2(max(D, 16)), 256)
    block_m = max(16, min(256, 16384 // (block_d * weights[0].element_size())))
    grid = (triton.cdiv(M, block_m), triton.cdiv(D, block_d))
    for c in range(0, len(weights), _MAX_TABLES):
        ws, fs = weights[c:c + _MAX_TABLES], flats[c:c + _MAX_TABLES]
        k = len(ws)
        ws = ws + [ws[0]] * (_MAX_TABLES - k)
        fs = fs + [fs[0]] * (_MAX_TABLES - k)
        _gather_sum_fwd_kernel[grid](
            out2d, *ws, *fs, *[w.stride(0) for w in ws], M, D, out2d.stride(0),
            -1 if padding_idx is None else int(padding_idx),
            NUM_TABLES=k, HAS_PAD=padding_idx is not None, ACCUMULATE=c > 0,
            BLOCK_M=block_m, BLOCK_D=block_d, num_warps=4)


class _GatherSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, padding_idx, n, *tensors):
        weights = [row_major(w) for w in tensors[:n]]
        shape, flats = flat_ids_of(tensors[n:])
        D = weights[0].shape[1]
        out = new_empty((flats[0].numel(), D), dtype=weights[0].dtype, device=weights[0].device)
        _launch_fwd(out, weights, flats, padding_idx)
        ctx.save_for_backward(*weights, *flats)
        ctx.n, ctx.padding_idx = n, padding_idx
        return out.view(*shape, D)

    @staticmethod
    def backward(ctx, gout):
        return gather_backward(ctx, gout, [0] * ctx.n)


def gather_sum_reference(weights: Sequence[torch.Tensor], ids: Sequence[torch.Tensor],
                         padding_idx: int | None = None) -> torch.Tensor:
    """Pure-torch gather_sum (the truth in tests and the CPU production path)."""
    out = None
    for w, i in zip(weights, ids):
        rows = i.long() if padding_idx is None else i.long().masked_fill(i == padding_idx, 0)
        o = torch.nn.functional.embedding(rows, w)
        if padding_idx is not None:
            o = o.masked_fill((i == padding_idx).unsqueeze(-1), 0)
        out = o if out is None else out + o
    return out


def gather_sum(weights: Sequence[torch.Tensor], ids: Sequence[torch.Tensor], padding_idx: int | None = None,
               backend: str = "auto", validate: bool = True) -> torch.Tensor:
    """Sum ``weights[t][ids[t]]`` over tables t (all of one dim): ``[..., d]``; grads flow to every table.

    Ids equal to ``padding_idx`` contribute zeros and no gradient. backend and validate as in gather_concat.
    """
    weights, ids = list(weights), list(ids)
    check_gather_args(weights, ids, padding_idx, validate)
    if len({w.shape[1] for w in weights}) != 1:
        raise ValueError(f"gather_sum needs 2-d tables of one dim, got {[tuple(w.shape) for w in weights]}")
    if not use_triton(backend, *weights, *ids) or not kernel_dtype_ok(*weights) or \
            len({w.dtype for w in weights}) > 1:
        return gather_sum_reference(weights, ids, padding_idx)
    return _GatherSum.apply(padding_idx, len(weights), *weights, *ids)
