"""Shared helpers for the specc Triton kernels: backend dispatch, launch heuristics, poisoning.

Triton is optional (pyproject only requires it on Linux): when it is missing every public kernel
falls back to its torch reference, and the ``@triton.jit`` decorators become no-ops.
"""
from __future__ import annotations

import os

import torch

try:  # pragma: no cover - exercised implicitly
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # pragma: no cover - no triton on this platform
    HAS_TRITON = False

    class _StubTL:  # enough for the kernel signatures (annotations) to evaluate
        constexpr = None

    class _StubTriton:
        @staticmethod
        def jit(fn=None, **_kw):
            return fn if fn is not None else (lambda f: f)

    triton = _StubTriton()  # type: ignore[assignment]
    tl = _StubTL()  # type: ignore[assignment]

BACKENDS = ("auto", "triton", "torch")

# Tests flip this on: every buffer a kernel is expected to fully overwrite is then allocated
# filled with NaN (floats) or a sentinel (ints), so an element the kernel forgot shows up.
POISON = False
_INT_POISON = -7777


def interpreting() -> bool:
    """True when Triton runs in interpreter mode (TRITON_INTERPRET=1, read at call time)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def use_triton(backend: str, *tensors) -> bool:
    """Resolve ``backend`` to True (Triton) or False (torch reference).

    "auto": Triton when any tensor is on CUDA or TRITON_INTERPRET=1, the torch reference otherwise.
    "triton": always Triton (raises if it cannot run). "torch": always the reference.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    on_cuda = any(t is not None and t.is_cuda for t in tensors)
    if backend == "triton":
        if not HAS_TRITON:
            raise RuntimeError("backend='triton' requested but triton is not installed")
        if not (on_cuda or interpreting()):
            raise RuntimeError("backend='triton' needs CUDA tensors or TRITON_INTERPRET=1")
        return True
    return HAS_TRITON and (on_cuda or interpreting())


_INDEX_DTYPES = (torch.int32, torch.int64)


def check_indices(*checks, ranges: bool = True) -> None:
    """Each check is (what, ids, size, allowed): ids must be int32/int64 (TypeError) and, with `ranges`, lie in
    [0, size) except values equal to `allowed` (IndexError naming the bad range). A kernel would otherwise read
    or write outside its tables. One device sync for all range checks."""
    bounds = []
    for what, ids, size, allowed in checks:
        if ids.dtype not in _INDEX_DTYPES:
            raise TypeError(f"{what} must be int32 or int64, got {ids.dtype}")
        if ranges and ids.numel():
            kept = ids if allowed is None else ids.masked_fill(ids == allowed, 0)
            bounds.append((what, size, torch.stack(torch.aminmax(kept))))
    if not bounds:
        return
    values = torch.stack([b for _, _, b in bounds]).tolist()
    for (what, size, _), (lo, hi) in zip(bounds, values):
        if lo < 0 or hi >= size:
            raise IndexError(f"{what} must lie in [0, {size}), got values from {lo} to {hi}")


def check_same_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> None:
    if hidden.dtype != weight.dtype:
        raise TypeError(f"hidden and weight must have one dtype, got {hidden.dtype} and {weight.dtype}")


def new_empty(shape, dtype, device) -> torch.Tensor:
    """``torch.empty`` for buffers a kernel must fully overwrite (poisoned when POISON is set)."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if POISON:
        if out.is_floating_point():
            out.fill_(float("nan"))
        else:
            out.fill_(_INT_POISON)
    return out


def num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: keep grids tiny


def next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision mirroring torch's matmul setting for fp32 inputs.

    fp32 with torch's TF32 matmuls off (torch's default) -> "tf32x3" (3 TF32 tensor-core products:
    about fp32 accuracy, far faster to compile and run than the "ieee" FMA path); TF32 allowed ->
    "tf32". Half-precision operands ignore it."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "tf32x3"
    return "tf32"


def kernel_dtype_ok(*tensors) -> bool:
    """Dtypes the Triton kernels accept (anything else falls back to the reference). Triton's CPU interpreter
    computes fp16/bf16 dot products wrongly (numpy has no bf16), so off CUDA only fp32 runs the kernels."""
    ok = (torch.float32, torch.float16, torch.bfloat16) if all(t.is_cuda for t in tensors) else (torch.float32,)
    return all(t.dtype in ok for t in tensors)


def row_major(t: torch.Tensor) -> torch.Tensor:
    """Unit stride along the last dim (big tables are normally already like that: no copy)."""
    return t if t.stride(-1) == 1 else t.contiguous()


# ----------------------------------------------------------------------------------- shared jit helpers
# Device functions called from the kernels; Triton inlines them, so they cost nothing at run time.
@triton.jit
def span(start, BLOCK: tl.constexpr, end):
    """Offsets start + [0, BLOCK) and their mask (offset < end)."""
    offs = start + tl.arange(0, BLOCK)
    return offs, offs < end


@triton.jit
def split_range(pid_s, cols_per_split, C):
    """[c_start, c_end): the columns of catalog split ``pid_s`` (splits of cols_per_split columns)."""
    c_start = pid_s * cols_per_split
    return c_start, tl.minimum(c_start + cols_per_split, C)


@triton.jit
def tile_2d(M, D, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's (rows, rmask, cols, cmask) on a (cdiv(M, BLOCK_M), cdiv(D, BLOCK_D)) grid."""
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = rows < M
    cmask = cols < D
    return rows, rmask, cols, cmask


@triton.jit
def tile_ptrs(ptr, rows, rmask, stride, cols, cmask):
    """Pointers [rows, cols] into a row-major matrix (int64 row offsets) and the tile's mask."""
    return ptr + rows.to(tl.int64)[:, None] * stride + cols[None, :], rmask[:, None] & cmask[None, :]


@triton.jit
def load_tile(ptr, rows, rmask, stride, cols, cmask):
    """The [rows, cols] tile of a row-major matrix, 0 where masked."""
    return tl.load(ptr + rows.to(tl.int64)[:, None] * stride + cols[None, :],
                   mask=rmask[:, None] & cmask[None, :], other=0.0)


@triton.jit
def load_tile_t(ptr, rows, rmask, stride, cols, cmask):
    """The transposed [cols, rows] tile of a row-major matrix (loaded directly as K x N), 0 where masked."""
    return tl.load(ptr + rows.to(tl.int64)[None, :] * stride + cols[:, None],
                   mask=cmask[:, None] & rmask[None, :], other=0.0)


@triton.jit
def hidden_tile(h_ptr, N, D, stride_h, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """On a (row blocks, column splits) grid: (program_id(1), rows, rmask, dofs, dmask, h) where h is
    this program's [BLOCK_N, BLOCK_D] tile of hidden [N, D] (row block program_id(0))."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows, rmask = span(pid_n * BLOCK_N, BLOCK_N, N)
    dofs = tl.arange(0, BLOCK_D)
    dmask = dofs < D
    h = load_tile(h_ptr, rows, rmask, stride_h, dofs, dmask)
    return pid_s, rows, rmask, dofs, dmask, h


@triton.jit
def scores_tile(h, w_ptr, stride_w, cols, cmask, dofs, dmask, PRECISION: tl.constexpr):
    """h [BLOCK_N, BLOCK_D] @ weight[cols].T -> [BLOCK_N, BLOCK_C] fp32 (masked columns score 0)."""
    wt = load_tile_t(w_ptr, cols, cmask, stride_w, dofs, dmask)
    return tl.dot(h, wt, input_precision=PRECISION)


@triton.jit
def gather_rows(w_ptr, ids_ptr, stride_w, rows, rmask, cols, cmask, padding_idx, HAS_PAD: tl.constexpr):
    """weight[ids[rows], cols] (table dtype); 0 for masked rows and, with HAS_PAD, for padding ids."""
    idx = tl.load(ids_ptr + rows, mask=rmask, other=0).to(tl.int64)
    lmask = rmask
    if HAS_PAD:
        lmask = lmask & (idx != padding_idx)
    return tl.load(w_ptr + idx[:, None] * stride_w + cols[None, :], mask=lmask[:, None] & cmask[None, :], other=0.0)
