"""Which rows each process reads in an epoch, and in how many batches.

An epoch's global order is a permutation of the row groups drawn from `(seed, epoch)` alone (file order without
shuffling), rows in file order within a group: the same for every world size. The usable rows, in that order, are
cut into `world_size` contiguous shares whose sizes differ by at most one row, so every row is read exactly once
per epoch; a share may start or end inside a row group (so one row group still splits across processes), and a
process reads only the row groups its share touches. Every process takes the same number of steps.
"""
from __future__ import annotations

import math

import numpy as np


def epoch_order(n_groups: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    if not shuffle:
        return np.arange(n_groups)
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF]).permutation(n_groups)


def share(n_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank `rank`'s share of `n_rows` rows: contiguous, sizes within one row of each other."""
    base, extra = divmod(n_rows, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def steps(n_rows: int, world_size: int, batch_size: int, drop_last: bool) -> int:
    """Batches per process and epoch: enough for the largest share (or only full ones for the smallest)."""
    if drop_last:
        return (n_rows // world_size) // batch_size
    return math.ceil(math.ceil(n_rows / world_size) / batch_size)


def batch_sizes(n_rows: int, batch_size: int, n_steps: int, drop_last: bool) -> list[int]:
    """Sizes of `n_steps` batches of at most `batch_size` rows covering a share of `n_rows` rows (its first
    `n_steps * batch_size` with `drop_last`). A share one row short of the largest would end with an empty batch:
    its last full batch gives that batch one row instead."""
    if drop_last:
        return [batch_size] * n_steps
    sizes = [batch_size] * (n_rows // batch_size) + ([n_rows % batch_size] if n_rows % batch_size else [])
    while len(sizes) < n_steps:
        i = max((j for j, s in enumerate(sizes) if s > 1), default=None)
        if i is None:
            raise ValueError(f"{n_rows} rows cannot fill {n_steps} batches")
        sizes[i] -= 1
        sizes.insert(i + 1, 1)
    return sizes


def pieces(kept: np.ndarray, order: np.ndarray, start: int, stop: int) -> list[tuple[int, int, int]]:
    """(row group, first, stop) for the usable rows at positions [start, stop) of the epoch's order: the row groups
    to read and, within each, the range of its usable rows (counted among those rows only)."""
    out, position = [], 0
    for g in order:
        k = int(kept[g])
        if k and position + k > start and position < stop:
            out.append((int(g), max(start - position, 0), min(stop - position, k)))
        position += k
        if position >= stop:
            break
    return out
