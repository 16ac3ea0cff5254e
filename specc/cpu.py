"""CPU tuning for training processes."""
from __future__ import annotations

import ctypes
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of unmapping it.

    By default glibc serves every allocation above a few MB (activations, logits) with a fresh mmap and
    unmaps it on free, so each training step page-faults all of its large tensors back in; on a 2-core
    machine that is ~20% of an XLNet step (benchmarks/RESULTS.md). Serving them from a heap that is never
    trimmed removes that cost, at the price of keeping the peak heap mapped. Returns False where not glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
