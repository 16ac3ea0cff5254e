"""What the validation pass has found so far: per kind of problem, a count and where the first one is.

Findings of different parts of the data (e.g. the shares of several processes) merge into the findings of the
whole: counts add up, the first place is the earliest in reading order (file, row), ranges widen.
"""
from __future__ import annotations

import numpy as np

from specc.data_chunks import Chunk, Lengths
from specc.data_columns import ColumnPlan


class Findings:
    """What is wrong so far: per kind of problem a count and the (file, row) of the first one."""

    def __init__(self, plans: list[ColumnPlan], item_column: str | None):
        self.plans, self.item_column = plans, item_column
        self.nulls: dict[str, list] = {}          # name -> [count, first]
        self.non_finite: dict[str, list] = {}     # name -> [count, first]
        self.out_of_range: dict[str, list] = {}   # name -> [count, min, max, first]
        self.out_of_domain: dict[str, list] = {}  # name -> [count, min, max, first]
        self.ragged: list = [0, None, None]       # rows whose list columns disagree in length, first, its lengths
        self.zero_inside: list = [0, None]        # rows with a 0 (padding) before an item id, first
        self.unreadable: dict[int, str] = {}       # file -> why its data cannot be read
        self.item_counts: np.ndarray | None = None

    def add(self, chunk: Chunk, lengths: Lengths, keep: np.ndarray, at: tuple[int, int]):
        file, base = at
        for name, rows in chunk.nulls.items():
            _count(self.nulls.setdefault(name, [0, None]), rows.size, (file, base + int(rows[0])))
        stored = lengths.stored
        if len(stored) > 1:   # a side list may match the item list with or without its padding
            ref_name = self.item_column if lengths.items is not None else next(iter(stored))
            ref, real = stored[ref_name], lengths.items if lengths.items is not None else stored[ref_name]
            bad = np.zeros(chunk.n, dtype=bool)
            for other, length in stored.items():
                if other != ref_name:
                    bad |= (length != ref) & (length != real)
            for name in stored:   # a null list is reported as a null, not as a length
                bad[chunk.nulls.get(name, slice(0, 0))] = False
            if bad.any():
                i = int(np.argmax(bad))
                if self.ragged[1] is None:
                    self.ragged[2] = {k: int(v[i]) for k, v in stored.items()}
                _count(self.ragged, int(bad.sum()), (file, base + i))
        if lengths.items is not None:
            inside = np.flatnonzero(lengths.items > lengths.ids)
            if inside.size:
                _count(self.zero_inside, inside.size, (file, base + int(inside[0])))
        for p in self.plans:
            values, off = chunk.columns[p.name]
            self._check(p, values, off, (file, base))
            if p.name == self.item_column:   # counts over the rows kept, before truncation
                self._count_items(values[np.repeat(keep, np.diff(off))] if off is not None else values[keep])

    def _check(self, p: ColumnPlan, values: np.ndarray, off: np.ndarray | None, at: tuple[int, int]):
        if values.size == 0:
            return

        def first(bad: np.ndarray) -> tuple[int, int]:
            i = int(np.argmax(bad))
            return at[0], at[1] + (int(np.searchsorted(off, i, side="right")) - 1 if off is not None else i)

        if np.issubdtype(values.dtype, np.floating):
            finite = np.isfinite(values)
            if not finite.all():
                _count(self.non_finite.setdefault(p.name, [0, None]), int((~finite).sum()), first(~finite))
                if not p.continuous:
                    return
                values = np.where(finite, values, p.null_fill)
        if p.cardinality is not None and not p.floating:
            outside = (values < 0) | (values >= p.cardinality)
        elif p.binary:
            outside = (values != 0) & (values != 1)
        elif p.domain is not None:
            outside = (values < p.domain[0]) | (values > p.domain[1])
        else:
            return
        if outside.any():
            found = self.out_of_range if p.cardinality is not None and not p.floating else self.out_of_domain
            # ids: the range the column spans; other values: examples of those outside
            lo, hi = (values.min(), values.max()) if found is self.out_of_range else \
                (values[outside].min(), values[outside].max())
            rec = found.setdefault(p.name, [0, lo, hi, None])
            rec[1], rec[2] = min(rec[1], lo), max(rec[2], hi)
            rec[0] += int(outside.sum())
            if rec[3] is None:
                rec[3] = first(outside)

    def _count_items(self, values: np.ndarray):
        v = values.astype(np.int64)
        self._count_items_sum(np.bincount(v[v >= 0]) if v.size else np.zeros(0, np.int64))

    def _count_items_sum(self, c: np.ndarray):
        if self.item_counts is None or len(c) > len(self.item_counts):
            c, self.item_counts = (self.item_counts if self.item_counts is not None else c[:0]), \
                c.astype(np.float64)
        self.item_counts[:len(c)] += c

    def problems(self, where) -> list[str]:
        """Every problem found; `where(file, row)` names a row."""
        from specc.data_messages import describe
        return [self.unreadable[f] for f in sorted(self.unreadable)] + \
            describe(self, {p.name: p for p in self.plans}, lambda at: where(*at))

    @staticmethod
    def merge(parts: list["Findings"]) -> "Findings":
        out = Findings(parts[0].plans, parts[0].item_column)
        for part in parts:
            out.unreadable.update(part.unreadable)
            for name in ("nulls", "non_finite"):
                for column, (count, at) in getattr(part, name).items():
                    _count(getattr(out, name).setdefault(column, [0, None]), count, at)
            for name in ("out_of_range", "out_of_domain"):
                for column, (count, lo, hi, at) in getattr(part, name).items():
                    rec = getattr(out, name).setdefault(column, [0, lo, hi, None])
                    rec[0], rec[1], rec[2] = rec[0] + count, min(rec[1], lo), max(rec[2], hi)
                    rec[3] = at if rec[3] is None else min(rec[3], at)
            if part.ragged[0] and (out.ragged[1] is None or part.ragged[1] < out.ragged[1]):
                out.ragged[1:] = [None, part.ragged[2]]
            _count(out.ragged, part.ragged[0], part.ragged[1])
            _count(out.zero_inside, part.zero_inside[0], part.zero_inside[1])
            if part.item_counts is not None:
                out._count_items_sum(part.item_counts)
        return out


def _count(record: list, n: int, at: tuple[int, int] | None):
    """Add `n` to a record's count; `at` (file, row) becomes its first place if it is earlier."""
    record[0] += n
    if n and (record[1] is None or at < record[1]):
        record[1] = at
