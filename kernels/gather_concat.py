"""gather_concat: look up one id tensor per embedding table and concatenate the rows.

    gather_concat(weights, ids, padding_idx=None, backend="auto") -> [..., sum(dims)]

Forward: one launch per table; each program copies BLOCK_M looked-up rows into that table's
column slice of the single output buffer, so the output is written once, in its final layout
(no per-table intermediate and no torch.cat).

Backward (sparse-friendly, deterministic, no atomics): per table the flat ids are sorted; equal
ids form segments (segment starts are found with a scatter-min, so there is no host sync). One
program reduces BLOCK_S segments: it sums the incoming gradient rows of each segment in fp32 and
writes the table-gradient row once. The only dense buffer is the table gradient itself (which
autograd requires); the temporaries are O(#ids). Rows equal to ``padding_idx`` read as zeros and
their table row gets no gradient. Ids must lie in [0, rows) (not checked by the kernel).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._common import (check_indices, gather_rows, kernel_dtype_ok, new_empty, next_pow2, row_major, tile_2d, tl,
                      triton, use_triton)

__all__ = ["gather_concat", "gather_concat_reference"]


# ----------------------------------------------------------------------------------- kernels
@triton.jit
def _gather_concat_fwd_kernel(out_ptr, w_ptr, ids_ptr, M, D, stride_w, stride_out, col_off, padding_idx,
                              HAS_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows, rmask, cols, cmask = tile_2d(M, D, BLOCK_M, BLOCK_D)
    vals = gather_rows(w_ptr, ids_ptr, stride_w, rows, rmask, cols, cmask, padding_idx, HAS_PAD)
    optr = out_ptr + rows.to(tl.int64)[:, None] * stride_out + col_off + cols[None, :]
    tl.store(optr, vals.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _gather_concat_bwd_kernel(gw_ptr, gout_ptr, sorted_ids_ptr, perm_ptr, starts_ptr, nseg_ptr,
                              D, stride_gw, stride_gout, col_off, padding_idx,
                              HAS_PAD: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """Segment reduction: grad_w[id] = sum of gout rows whose (sorted) id equals id."""
    pid_s = tl.program_id(0)
    pid_d = tl.program_id(1)
    nseg = tl.load(nseg_ptr)   # programs past the last segment find every lane masked off
    seg = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    smask = seg < nseg
    cmask = cols < D
    start = tl.load(starts_ptr + seg, mask=smask, other=0)
    end = tl.load(starts_ptr + seg + 1, mask=smask, other=0)
    length = end - start
    max_len = tl.max(length, axis=0)
    acc = tl.zeros([BLOCK_S, BLOCK_D], dtype=tl.float32)
    for j in range(0, max_len):
        # everything in one [BLOCK_S, BLOCK_D] layout: with a 1-D row mask next to the 2-D one, triton 3.6's
        # RemoveLayoutConversions pass breaks when the gradient rows are 16-byte aligned (the usual case)
        valid = (j < length)[:, None] & cmask[None, :]
        p = tl.load(perm_ptr + (start + j)[:, None] + cols[None, :] * 0, mask=valid, other=0).to(tl.int64)
        g = tl.load(gout_ptr + p * stride_gout + col_off + cols[None, :], mask=valid, other=0.0)
        acc += g.to(tl.float32)
    uid = tl.load(sorted_ids_ptr + start, mask=smask, other=0).to(tl.int64)
    wmask = smask
    if HAS_PAD:
        wmask = wmask & (uid != padding_idx)
    tl.store(gw_ptr + uid[:, None] * stride_gw + cols[None, :], acc.to(gw_ptr.dtype.element_ty),
             mask=wmask[:, None] & cmask[None, :])


# ----------------------------------------------------------------------------------- launchers
def _fwd_blocks(D: int, elem_size: int):
    block_d = min(next_pow2(max(D, 16)), 256)
    # ~16 KB of rows per program: enough bytes in flight for HBM bandwidth.
    block_m = max(16, min(256, 16384 // (block_d * elem_size)))
    return block_m, block_d


def launch_gather_fwd(out2d: torch.Tensor, weight: torch.Tensor, flat_ids: torch.Tensor, col_off: int,
                      padding_idx: int | None) -> None:
    """Write weight[flat_ids] into out2d[:, col_off:col_off + dim]."""
    M = flat_ids.numel()
    D = weight.shape[1]
    if M == 0:
        return
    block_m, block_d = _fwd_blocks(D, weight.element_size())
    grid = (triton.cdiv(M, block_m), triton.cdiv(D, block_d))
    _gather_concat_fwd_kernel[grid](
        out2d, weight, flat_ids, M, D, weight.stride(0), out2d.stride(0), col_off,
        -1 if padding_idx is None else int(padding_idx),
        HAS_PAD=padding_idx is not None, BLOCK_M=block_m, BLOCK_D=block_d, num_warps=4)


def segment_ids(flat_ids: torch.Tensor):
    """Sort ids and find segment starts without a host sync. Returns (sorted, perm, starts, nseg)."""
    M = flat_ids.numel()
    sorted_ids, perm = torch.sort(flat_ids)
    flag = torch.ones(M, dtype=torch.int64, device=flat_ids.device)
    flag[1:] = (sorted_ids[1:] != sorted_ids[:-1]).to(torch.int64)
    seg = torch.cumsum(flag, 0) - 1
    starts = torch.full((M + 1,), M, dtype=torch.int64, device=flat_ids.device)
    starts.scatter_reduce_(0, seg, torch.arange(M, device=flat_ids.device), reduce="amin", include_self=True)
    nseg = (seg[-1:] + 1).contiguous()
    return sorted_ids, perm, starts, nseg


def launch_gather_bwd(grad_w: torch.Tensor, gout2d: torch.Tensor, segments, col_off: int,
                      padding_idx: int | None) -> None:
    """grad_w[id] += sum of gout2d[i, col_off:col_off+dim] over i with ids[i] == id (grad_w zeroed)."""
    sorted_ids, perm, starts, nseg = segments
    M = sorted_ids.numel()
    if M == 0:
        return
    D = grad_w.shape[1]
    block_d = min(next_pow2(max(D, 16)), 128)
    block_s = 32
    grid = (triton.cdiv(M, block_s), triton.cdiv(D, block_d))
    _gather_concat_bwd_kernel[grid](
        grad_w, gout2d, sorted_ids, perm, starts, nseg, D, grad_w.stride(0), gout2d.stride(0), col_off,
        -1 if padding_idx is None else int(padding_idx),
        HAS_PAD=padding_idx is not None, BLOCK_S=block_s, BLOCK_D=block_d, num_warps=4)


def flat_ids_of(ids: Sequence[torch.Tensor]):
    shape = ids[0].shape
    for i in ids:
        if i.shape != shape:
            raise ValueError(f"all id tensors must have the same shape, got {[tuple(t.shape) for t in ids]}")
        if i.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"ids must be int32 or int64, got {i.dtype}")
    return shape, [i.reshape(-1).contiguous() for i in ids]


def table_grads(weights, flats, gout2d, col_offs, padding_idx):
    """Per-table gradients via sorted segments; a shared id tensor is sorted once."""
    cache: dict = {}
    grads = []
    for w, f, off in zip(weights, flats, col_offs):
        key = (f.data_ptr(), f.numel(), f.dtype)
        if key not in cache:
            cache[key] = segment_ids(f) if f.numel() else None
        gw = torch.zeros_like(w, memory_format=torch.contiguous_format)
        if cache[key] is not None:
            launch_gather_bwd(gw, gout2d, cache[key], off, padding_idx)
        grads.append(gw)
    return grads


def gather_backward(ctx, gout, col_offs):
    """Autograd backward shared by gather_concat and gather_sum.

    ctx holds n, padding_idx and the saved (*weights, *flat ids); table i reads gout's columns from
    col_offs[i]. Returns (None, None, *table grads (None where not needed), *None for the ids)."""
    saved = ctx.saved_tensors
    n = ctx.n
    weights, flats = saved[:n], saved[n:]
    gout2d = row_major(gout.reshape(-1, gout.shape[-1]))
    grads = [None] * n
    sel = [i for i in range(n) if ctx.needs_input_grad[2 + i]]
    if sel:
        got = table_grads([weights[i] for i in sel], [flats[i] for i in sel], gout2d, [col_offs[i] for i in sel],
                          ctx.padding_idx)
        for i, g in zip(sel, got):
            grads[i] = g
    return (None, None, *grads, *([None] * n))


# ----------------------------------------------------------------------------------- autograd
class _GatherConcat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, padding_idx, n, *tensors):
        weights = [row_major(w) for w in tensors[:n]]
        shape, flats = flat_ids_of(tensors[n:])
        dims = [w.shape[1] for w in weights]
        offs = [sum(dims[:i]) for i in range(n)]
        M = flats[0].numel()
        out = new_empty((M, sum(dims)), dtype=weights[0].dtype, device=weights[0].device)
        for w, f, off in zip(weights, flats, offs):
            launch_gather_fwd(out, w, f, off, padding_idx)
        ctx.save_for_backward(*weights, *flats)
        ctx.n, ctx.offs, ctx.padding_idx = n, offs, padding_idx
        return out.view(*shape, sum(dims))

    @staticmethod
    def backward(ctx, gout):
        return gather_backward(ctx, gout, ctx.offs)


# ----------------------------------------------------------------------------------- reference
def gather_concat_reference(weights: Sequence[torch.Tensor], ids: Sequence[torch.Tensor],
                            padding_idx: int | None = None) -> torch.Tensor:
    """Pure-torch gather_concat (the truth in tests and the CPU production path)."""
    outs = []
    for w, i in zip(weights, ids):
        rows = i.long() if padding_idx is None else i.long().masked_fill(i == padding_idx, 0)
        o = torch.nn.functional.embedding(rows, w)
        if padding_idx is not None:
            o = o.masked_fill((i == padding_idx).unsqueeze(-1), 0)
        outs.append(o)
    return torch.cat(outs, dim=-1)


def check_gather_args(weights, ids, padding_idx, validate):
    """Shared by gather_concat and gather_sum: one id tensor of one shape per 2-d table, ids in range."""
    if len(weights) == 0 or len(weights) != len(ids):
        raise ValueError(f"need one id tensor per table, got {len(weights)} tables and {len(ids)} id tensors")
    for w in weights:
        if w.dim() != 2:
            raise ValueError(f"tables must be 2-d [rows, dim], got shape {tuple(w.shape)}")
    if any(i.shape != ids[0].shape for i in ids):
        raise ValueError(f"all id tensors must have the same shape, got {[tuple(i.shape) for i in ids]}")
    check_indices(*((f"ids of table {t}", i, w.shape[0], padding_idx) for t, (w, i) in enumerate(zip(weights, ids))),
                  ranges=validate)


def gather_concat(weights: Sequence[torch.Tensor], ids: Sequence[torch.Tensor], padding_idx: int | None = None,
                  backend: str = "auto", validate: bool = True) -> torch.Tensor:
    """Concatenate ``weights[t][ids[t]]`` over tables t: ``[..., sum(dims)]``; grads flow to every table.

    ``ids`` are int tensors of one common shape ``[...]``, each in [0, rows of its table) or equal to
    ``padding_idx``, which gives a zero row and no gradient. backend: "auto" (Triton on CUDA or
    TRITON_INTERPRET=1, torch otherwise), "triton" or "torch". ``validate=False`` skips the id check (one
    device sync) for callers that checked their ids already.
    """
    weights, ids = list(weights), list(ids)
    check_gather_args(weights, ids, padding_idx, validate)
    if not use_triton(backend, *weights, *ids) or not kernel_dtype_ok(*weights) or \
            len({w.dtype for w in weights}) > 1:
        return gather_concat_reference(weights, ids, padding_idx)
    return _GatherConcat.apply(padding_idx, len(weights), *weights, *ids)
