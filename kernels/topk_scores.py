"""topk_scores: top-k of hidden @ weight.T per row, without materialising the [N, C] scores.

    topk_scores(hidden [N,d], weight [C,d], k, exclude=None [N,m], backend="auto")
        -> (scores [N,k] float32, ids [N,k] int64), sorted by descending score.

Semantics: ``exclude`` lists item ids per row that are never returned (duplicates fine; callers
pad with 0, which excludes item 0 = the padding item, on purpose). When fewer than k items are
available (k > C, or too many excluded) the tail is padded with score -inf and id -1; any slot
whose score is -inf carries id -1. Ties: any consistent order. The selection has no gradient; the
returned scores do (``_TopkScores``): d score[n, j] is weight[ids[n, j]] for hidden[n] and hidden[n] for
that weight row, none for padded slots.

Triton path (exact, two recompute passes over the catalog, each one tl.dot per tile):
1. ``_topk_scores_chunkmax_kernel``: the catalog is cut into n_chunks >= K' chunks of GROUP
   columns (K' = k + m, so exclusions can be dropped afterwards); it writes the max score of
   every (row, chunk), an [N, n_chunks] buffer (n_chunks ~ 8 K', independent of C). The K'-th
   largest chunk max, tau_i, is a lower bound of the row's K'-th largest score (K' distinct items
   reach it), so the true top-K' all score >= tau_i.
2. ``_topk_scores_fwd_kernel``: recomputes the tiles and appends every (score, id) with
   score >= tau_i to a per-row candidate buffer of CAP = 4 K' slots (atomic row counter +
   in-tile cumsum for the slots).
Then torch drops excluded candidates (searchsorted against the sorted exclude row) and takes the
top k of the CAP candidates. Rows whose candidates overflowed CAP (massive ties, or very
clustered catalogs) are recomputed exactly with the blockwise reference.
Memory: O(N * (n_chunks + CAP)), independent of C. Tiny catalogs (C < 16 K') skip pass 1.
"""
from __future__ import annotations

import operator

import torch

from ._common import (check_same_dtype, dot_precision, hidden_tile, interpreting, kernel_dtype_ok, new_empty,
                      next_pow2, num_sms, row_major, scores_tile, span, split_range, tl, triton, use_triton)

__all__ = ["topk_scores", "topk_scores_reference"]

_MIN_GROUP = 16


@triton.jit
def _topk_scores_chunkmax_kernel(h_ptr, w_ptr, cmax_ptr, N, C, D, stride_h, stride_w, n_chunks,
                                 TILES: tl.constexpr, SUB: tl.constexpr, NSUB: tl.constexpr,
                                 BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
                                 PRECISION: tl.constexpr):
    """cmax[row, chunk] = max score over the chunk's columns (chunk = TILES*BLOCK_C or SUB columns)."""
    pid_c, rows, rmask, dofs, dmask, h = hidden_tile(h_ptr, N, D, stride_h, BLOCK_N, BLOCK_D)
    best = tl.full([BLOCK_N, NSUB], float("-inf"), tl.float32)
    for t in range(TILES):
        cols, cmask = span((pid_c * TILES + t) * BLOCK_C, BLOCK_C, C)
        s = scores_tile(h, w_ptr, stride_w, cols, cmask, dofs, dmask, PRECISION)
        s = tl.where(cmask[None, :], s, float("-inf"))
        best = tl.maximum(best, tl.max(tl.reshape(s, [BLOCK_N, NSUB, SUB]), axis=2))
    chunks = pid_c * NSUB + tl.arange(0, NSUB)
    tl.store(cmax_ptr + rows.to(tl.int64)[:, None] * n_chunks + chunks[None, :], best,
             mask=rmask[:, None] & (chunks < n_chunks)[None, :])


@triton.jit
def _topk_scores_fwd_kernel(h_ptr, w_ptr, thr_ptr, cnt_ptr, cval_ptr, cid_ptr, N, C, D, stride_h, stride_w,
                            cols_per_split, CAP,
                            BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
                            PRECISION: tl.constexpr):
    """Append every (score, id) with score >= thr[row] to the row's candidate list (CAP slots)."""
    pid_s, rows, rmask, dofs, dmask, h = hidden_tile(h_ptr, N, D, stride_h, BLOCK_N, BLOCK_D)
    thr = tl.load(thr_ptr + rows, mask=rmask, other=float("inf"))
    c_start, c_end = split_range(pid_s, cols_per_split, C)
    for c0 in range(c_start, c_end, BLOCK_C):
        cols, cmask = span(c0, BLOCK_C, c_end)
        s = scores_tile(h, w_ptr, stride_w, cols, cmask, dofs, dmask, PRECISION)
        sel = (s >= thr[:, None]) & cmask[None, :] & rmask[:, None]
        sel_i = sel.to(tl.int32)
        nsel = tl.sum(sel_i, axis=1)
        if tl.max(nsel, axis=0) > 0:
            base = tl.atomic_add(cnt_ptr + rows, nsel, mask=rmask)
            pos = base[:, None] + tl.cumsum(sel_i, axis=1) - 1
            ok = sel & (pos < CAP)
            off = rows.to(tl.int64)[:, None] * CAP + pos
            tl.store(cval_ptr + off, s, mask=ok)
            tl.store(cid_ptr + off, cols[None, :] + tl.zeros([BLOCK_N, BLOCK_C], tl.int32), mask=ok)


def _config(D: int, dtype: torch.dtype, kind: str):
    """(BLOCK_N, BLOCK_C, BLOCK_D, num_warps, num_stages); kind "max" (pass 1) or "select" (pass 2).

    Sized for H100 shared memory (the select pass also needs scratch for the in-tile cumsum)."""
    block_d = max(16, next_pow2(D))
    if interpreting():
        return 32, 64, block_d, 4, 1
    if dtype == torch.float32:
        return 64, 64, block_d, 4, 2
    if block_d > 128:
        return 64, 64, block_d, 8, 2
    return (128, 128, block_d, 8, 3) if kind == "max" else (64, 128, block_d, 8, 3)


def _drop_excluded(vals: torch.Tensor, ids: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
    if exclude is None or exclude.shape[1] == 0:
        return vals
    ex = torch.sort(exclude.to(torch.int64), dim=1).values
    pos = torch.searchsorted(ex, ids.to(torch.int64)).clamp(max=ex.shape[1] - 1)
    return vals.masked_fill(ex.gather(1, pos) == ids, float("-inf"))


def _finish(vals: torch.Tensor, ids: torch.Tensor, k: int, presorted: bool = False):
    """Top-k of candidate (vals, ids) [N, M] -> padded ([N, k] fp32, [N, k] int64), -inf slots get id -1.
    `presorted`: the candidates are already the top min(k, M), in descending order."""
    N, M = vals.shape
    kk = min(k, M)
    if presorted:
        v, out_ids = vals[:, :kk], ids[:, :kk].to(torch.int64)
    else:
        v, i = torch.topk(vals, kk, dim=1)
        out_ids = ids.gather(1, i).to(torch.int64)
    out_ids = out_ids.masked_fill(v == float("-inf"), -1)
    if kk < k:
        v = torch.cat([v, v.new_full((N, k - kk), float("-inf"))], dim=1)
        out_ids = torch.cat([out_ids, out_ids.new_full((N, k - kk), -1)], dim=1)
    return v.float().contiguous(), out_ids.contiguous()


def _topk_triton(hidden, weight, k, exclude):
    h, w = row_major(hidden), row_major(weight)
    N, D = h.shape
    C = w.shape[0]
    m = 0 if exclude is None else exclude.shape[1]
    kk = min(k + m, C)                       # K': enough candidates to drop every exclusion
    prec = dot_precision(h.dtype)
    dev = h.device
    if C >= _MIN_GROUP * (kk + 1):
        BN, BC, BD, warps, stages = _config(D, h.dtype, "max")
        n_blocks = triton.cdiv(N, BN)
        group = max(_MIN_GROUP, next_pow2(C // (8 * kk) + 1) // 2)   # power of 2, ~8 K' chunks or more
        n_chunks = triton.cdiv(C, group)
        tiles, sub = (group // BC, BC) if group >= BC else (1, group)
        cmax = new_empty((N, n_chunks), torch.float32, dev)
        grid1 = (n_blocks, triton.cdiv(C, tiles * BC))
        _topk_scores_chunkmax_kernel[grid1](h, w, cmax, N, C, D, h.stride(0), w.stride(0), n_chunks,
                                            TILES=tiles, SUB=sub, NSUB=BC // sub, BLOCK_N=BN, BLOCK_C=BC, BLOCK_D=BD,
                                            PRECISION=prec, num_warps=warps, num_stages=stages)
        thr = torch.topk(cmax, kk, dim=1).values[:, -1].contiguous()
        del cmax
        cap = 4 * kk
    else:                                    # tiny catalog: every item is a candidate
        thr = torch.full((N,), float("-inf"), dtype=torch.float32, device=dev)
        cap = C
    BN, BC, BD, warps, stages = _config(D, h.dtype, "select")
    n_blocks = triton.cdiv(N, BN)
    cnt = torch.zeros(N, dtype=torch.int32, device=dev)
    cval = torch.full((N, cap), float("-inf"), dtype=torch.float32, device=dev)
    cid = torch.full((N, cap), -1, dtype=torch.int32, device=dev)
    col_tiles = triton.cdiv(C, BC)
    splits = max(1, min(col_tiles, triton.cdiv(4 * num_sms(dev), n_blocks)))
    cols_per_split = triton.cdiv(col_tiles, splits) * BC
    splits = triton.cdiv(C, cols_per_split)
    _topk_scores_fwd_kernel[(n_blocks, splits)](h, w, thr, cnt, cval, cid, N, C, D, h.stride(0), w.stride(0),
                                                cols_per_split, cap, BLOCK_N=BN, BLOCK_C=BC, BLOCK_D=BD,
                                                PRECISION=prec, num_warps=warps, num_stages=stages)
    cid64 = cid.to(torch.int64)
    scores, ids = _finish(_drop_excluded(cval, cid64, exclude), cid64, k)
    over = (cnt > cap).nonzero().flatten()
    if over.numel():                         # rare: exact blockwise fallback for those rows
        ex = exclude[over] if exclude is not None else None
        s2, i2 = topk_scores_reference(hidden[over], weight, k, ex)
        scores[over], ids[over] = s2, i2
    return scores, ids


def topk_scores_reference(hidden: torch.Tensor, weight: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                          block: int | None = None):
    """Blockwise pure-torch top-k (test truth and CPU production path): memory O(N * (k + block))."""
    N = hidden.shape[0]
    C = weight.shape[0]
    if block is None:
        block = max(1024, min(65536, (1 << 24) // max(N, 1)))
    ex = exclude.to(torch.int64) if exclude is not None and exclude.shape[1] > 0 else None
    best_v = torch.full((N, 0), float("-inf"), dtype=torch.float32, device=hidden.device)
    best_i = torch.zeros((N, 0), dtype=torch.int64, device=hidden.device)
    with torch.no_grad():
        for c0 in range(0, C, block):
            c1 = min(c0 + block, C)
            s = (hidden @ weight[c0:c1].T).float()
            if ex is not None:
                rel = ex - c0
                inside = (rel >= 0) & (rel < c1 - c0)
                rows = torch.arange(N, device=hidden.device)[:, None].expand_as(rel)
                s[rows[inside], rel[inside]] = float("-inf")
            block_v, block_pos = torch.topk(s, min(k, c1 - c0), dim=1)
            if c0 == 0:
                best_v, best_i = block_v, block_pos
                continue
            v = torch.cat([best_v, block_v], dim=1)                      # merge [N, <= 2k] candidates
            i = torch.cat([best_i, block_pos + c0], dim=1)
            best_v, pos = torch.topk(v, min(k, v.shape[1]), dim=1)
            best_i = i.gather(1, pos)
    return _finish(best_v, best_i, k, presorted=True)


class _TopkScores(torch.autograd.Function):
    """Runs a selection (Triton or the reference) without a graph and makes its scores differentiable."""

    @staticmethod
    def forward(ctx, hidden, weight, k, exclude, select):
        scores, ids = select(hidden, weight, k, exclude)
        ctx.save_for_backward(hidden, weight, ids)
        ctx.mark_non_differentiable(ids)
        return scores, ids

    @staticmethod
    def backward(ctx, grad_scores, _grad_ids):
        hidden, weight, ids = ctx.saved_tensors
        g = torch.where(ids >= 0, grad_scores.float(), 0.0)          # padded slots (id -1) have no item
        rows = ids.clamp(min=0)
        dh = dw = None
        if ctx.needs_input_grad[0]:
            dh = torch.einsum("nk,nkd->nd", g, weight[rows].float()).to(hidden.dtype)
        if ctx.needs_input_grad[1]:
            contrib = (g[..., None] * hidden.float()[:, None]).flatten(0, 1)
            dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            dw = dw.index_add_(0, rows.flatten(), contrib).to(weight.dtype)
        return dh, dw, None, None, None


def _select_triton(hidden, weight, k, exclude):
    with torch.no_grad():
        return _topk_triton(hidden, weight, k, exclude)


def _as_int(k) -> int:
    """ints, numpy ints and integer one-element tensors; not bools or floats (3.7 must not become 3)."""
    try:
        if not isinstance(k, bool):
            return operator.index(k)
    except TypeError:
        pass
    raise TypeError(f"k must be an int, got {k!r}")


def topk_scores(hidden: torch.Tensor, weight: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                backend: str = "auto"):
    """Top-k items by ``hidden @ weight.T`` per row -> (scores [N, k] float32, ids [N, k] int64).

    ``exclude`` [N, m]: item ids never returned for that row (pad with 0 = the padding item).
    If k exceeds the available items, the tail is padded with score -inf and id -1.
    Never materialises the [N, C] score matrix (Triton and reference alike).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"need hidden [N, d] and weight [C, d], got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    k = _as_int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_same_dtype(hidden, weight)
    if exclude is not None and (exclude.dim() != 2 or exclude.shape[0] != hidden.shape[0]):
        raise ValueError(f"exclude must be [N, m], got {tuple(exclude.shape)}")
    if exclude is not None and exclude.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"exclude must hold int32 or int64 ids, got {exclude.dtype}")
    tensors = [t for t in (hidden, weight, exclude) if t is not None]
    if not use_triton(backend, *tensors) or not kernel_dtype_ok(hidden, weight) or hidden.shape[0] == 0 \
            or weight.shape[0] == 0:
        return _TopkScores.apply(hidden, weight, k, exclude, topk_scores_reference)
    return _TopkScores.apply(hidden, weight, k, exclude, _select_triton)
