"""Rows ready to batch, held ragged (no padding in memory), streams of them shuffled and cut into batches, and
the padded batches.

A batch pads its list columns to the longest row *in the batch* (at most max_length, since each row keeps only
its most recent max_length values, unless max_length is None), with 0 on the right; ids are int64, values float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from specc.data_chunks import Chunk, Lengths
from specc.data_columns import ColumnPlan


@dataclass
class Rows:
    n: int
    values: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]      # list columns only; int64 from 0

    @staticmethod
    def kept(chunk: Chunk, lengths: Lengths, keep: np.ndarray, max_length: int | None) -> "Rows":
        """The rows of `chunk` marked in `keep`, each list column cut where the items stop and to its last
        `max_length` values (None: all of them)."""
        used = lengths.used()
        values, offsets = {}, {}
        for name, (v, off) in chunk.columns.items():
            if off is None:
                values[name] = v[keep]
                continue
            ends = off[:-1][keep] + used[name][keep]
            starts = off[:-1][keep] if max_length is None else np.maximum(off[:-1][keep], ends - max_length)
            values[name], offsets[name] = _ranges(v, starts, ends)
        return Rows(int(keep.sum()), values, offsets)

    def take(self, index: np.ndarray) -> "Rows":
        """Rows `index` (an int array or a slice), in that order."""
        values, offsets, n = {}, {}, 0
        for name, v in self.values.items():
            if name in self.offsets:
                off = self.offsets[name]
                values[name], offsets[name] = _ranges(v, off[:-1][index], off[1:][index])
                n = len(offsets[name]) - 1
            else:
                values[name] = v[index]
                n = len(values[name])
        return Rows(n, values, offsets)

    @staticmethod
    def concat(parts: list["Rows"]) -> "Rows":
        parts = [p for p in parts if p.n] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        values, offsets = {}, {}
        for name in parts[0].values:
            values[name] = np.concatenate([p.values[name] for p in parts])
            if name in parts[0].offsets:
                ends = np.cumsum([0] + [p.offsets[name][-1] for p in parts[:-1]])
                offsets[name] = np.concatenate([parts[0].offsets[name][:1]] +
                                               [p.offsets[name][1:] + e for p, e in zip(parts, ends)])
        return Rows(sum(p.n for p in parts), values, offsets)

    def batch(self, plans: list[ColumnPlan]) -> dict:
        """`{column: tensor}`: list columns `[n, longest row here]` right-padded with 0, scalars `[n]`."""
        import torch
        width = max((int(np.diff(off).max()) for off in self.offsets.values() if self.n), default=0)
        out = {}
        for p in plans:
            dtype = np.float32 if p.floating else np.int64
            v = self.values[p.name]
            if p.name in self.offsets:
                lengths = np.diff(self.offsets[p.name])
                padded = np.zeros((self.n, width), dtype=dtype)
                padded[np.arange(width)[None, :] < lengths[:, None]] = v
                out[p.name] = torch.from_numpy(padded)
            else:
                out[p.name] = torch.from_numpy(np.ascontiguousarray(v, dtype=dtype))
        return out


def _ranges(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`values[starts[i]:ends[i]]` for every i, concatenated, and the offsets (from 0) of the pieces."""
    lengths = ends - starts
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return values[index], offsets


def shuffled(parts: Iterator[Rows], capacity: int, rng) -> Iterator[Rows]:
    """The rows of `parts` through a shuffle buffer of about `capacity` rows: once full, it is permuted and all but
    half of it passed on, so a row can travel far beyond the record batch it came in."""
    waiting, held = [], 0
    for part in parts:
        waiting.append(part)
        held += part.n
        if held >= capacity:
            pool = Rows.concat(waiting)
            pool = pool.take(rng.permutation(pool.n))
            out = pool.n - capacity // 2
            yield pool.take(slice(0, out))
            waiting, held = [pool.take(slice(out, None))], pool.n - out
    if held:
        pool = Rows.concat(waiting)
        yield pool.take(rng.permutation(pool.n))


def cut(parts: Iterator[Rows], sizes: list[int]) -> Iterator[Rows]:
    """Batches of `sizes[i]` rows from the rows of `parts` (which must hold at least sum(sizes))."""
    pending, at, i = None, 0, 0
    for part in parts:
        pending = part if pending is None else Rows.concat([pending.take(slice(at, None)), part])
        at = 0
        while i < len(sizes) and pending.n - at >= sizes[i]:
            yield pending.take(slice(at, at + sizes[i]))
            at += sizes[i]
            i += 1
        if i == len(sizes):
            return
    if i < len(sizes):
        raise RuntimeError(f"the data ended {len(sizes) - i} batch(es) early: did it change since it was opened?")
