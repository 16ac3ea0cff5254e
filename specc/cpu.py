"""CPU tuning for training processes."""
from __future__ import annotations

import ctypes
import os
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


MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    """OMP_NUM_THREADS when set, else half the CPUs this process may run on, at least 1 and at most 4.

    torch's own default (one thread per core) is a poor fit on small shared machines: its worker threads wait
    for each other at every operation, so one busy core stalls all of them -- on a loaded 2-core machine the
    quickstart ran 10-30x slower with 2 threads than with 1 (benchmarks/RESULTS.md). The models specc trains
    on a CPU gain little past a few threads."""
    try:
        asked = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        asked = 0
    if asked > 0:
        return asked
    return max(1, min(MAX_DEFAULT_THREADS, usable_cpus() // 2))


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (`threads`, or default_threads()) and return it; more threads than the
    CPUs the process may use are set, with a warning on stderr (they wait for each other at every operation)."""
    import sys

    import torch
    threads, cpus = threads or default_threads(), usable_cpus()
    if threads > cpus:
        print(f"warning: --threads {threads} on {cpus} CPU(s): torch's threads would wait for each other at every "
              f"operation (several times slower); at most {cpus} pays", file=sys.stderr)
    torch.set_num_threads(threads)
    return threads


def slow_bf16_warning(device: str) -> str | None:
    """What to tell a user who asked for bf16 on a CPU without bf16 arithmetic (AVX512-BF16 or AMX), else None.

    There torch emulates bf16 with conversions around fp32 arithmetic: an XLNet run on ml-100k trained at 63
    sessions/s in bf16 against 503 in fp32 on a 2-core AVX2 EPYC (benchmarks/RESULTS.md)."""
    if device != "cpu":
        return None
    import torch
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if None in probes or any(probe() for probe in probes):   # a torch without the probes: nothing to say
        return None
    return ("warning: bf16 precision on this CPU, which has no bf16 arithmetic (AVX512-BF16 or AMX): torch "
            "emulates it, and training runs several times slower than in fp32 (the default)")
