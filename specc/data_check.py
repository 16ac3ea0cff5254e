"""The validation pass: one streamed read of every row group, in bounded memory, finding every problem at once.

Per column it counts nulls, NaN/inf values, ids outside [0, cardinality) and values outside an int_domain or
0/1; per row, list columns of different lengths and a padding 0 before an item id. Each problem names its
column, how many values or rows, and the file and row of the first one. The same pass counts, per row group,
the rows a model can use (what the shards are cut from) and how often each item occurs (for popularity
samplers). Memory: one record batch of `CHUNK_ROWS` rows and one count per row group and per item id.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specc.data_chunks import Chunk, Lengths
from specc.data_columns import ColumnPlan
from specc.data_files import Footers

CHUNK_ROWS = 1 << 16


@dataclass
class Scan:
    kept: np.ndarray                  # int64 [row groups]: the rows of each row group a model can use
    n_total: int                      # rows read
    item_counts: np.ndarray | None    # float64 [max id + 1]: occurrences of each id in the item column's rows kept
    problems: list[str]


def scan(footers: Footers, plans: list[ColumnPlan], *, item_column: str | None, length_column: str | None,
         min_length: int) -> Scan:
    """Read every row group of `footers` once, in order; see the module docstring."""
    import pyarrow.parquet as pq
    findings = _Findings(plans, item_column)
    kept = np.zeros(len(footers.row_groups), dtype=np.int64)
    names = [p.name for p in plans]
    n_total, broken, reader = 0, set(), None
    for g, group in enumerate(footers.row_groups):
        if group.file in broken or not names:
            continue
        row = group.first_row
        try:
            if reader is None or reader[0] != group.file:
                if reader is not None:
                    reader[1].close()
                reader = (group.file, pq.ParquetFile(footers.files[group.file]))
            for rb in reader[1].iter_batches(batch_size=CHUNK_ROWS, row_groups=[group.index], columns=names):
                chunk = Chunk.read(rb, plans)
                lengths = Lengths.of(chunk, item_column)
                keep = lengths.kept(chunk.n, length_column, min_length)
                findings.add(chunk, lengths, keep, (group.file, row))
                kept[g] += int(keep.sum())
                row += chunk.n
                n_total += chunk.n
        except Exception as exc:  # a file whose footer reads but whose data does not
            broken.add(group.file)
            findings.unreadable.append(f"cannot read {footers.files[group.file]!r}: {type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
    if reader is not None:
        reader[1].close()
    return Scan(kept, n_total, findings.item_counts, findings.problems(footers.where))


class _Findings:
    """What is wrong so far: per kind of problem a count and the (file, row) of the first one."""

    def __init__(self, plans: list[ColumnPlan], item_column: str | None):
        self.plans, self.item_column = plans, item_column
        self.nulls: dict[str, list] = {}          # name -> [count, first]
        self.non_finite: dict[str, list] = {}     # name -> [count, first]
        self.out_of_range: dict[str, list] = {}   # name -> [count, min, max, first]
        self.out_of_domain: dict[str, list] = {}  # name -> [count, min, max, first]
        self.ragged: list = [0, None, None]       # rows whose list columns disagree in length, first, its lengths
        self.zero_inside: list = [0, None]        # rows with a 0 (padding) before an item id, first
        self.unreadable: list[str] = []
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
        c = np.bincount(v[v >= 0]) if v.size else np.zeros(0, np.int64)
        if self.item_counts is None or len(c) > len(self.item_counts):
            c, self.item_counts = (self.item_counts if self.item_counts is not None else c[:0]), \
                c.astype(np.float64)
        self.item_counts[:len(c)] += c

    def problems(self, where) -> list[str]:
        """Every problem found; `where(file, row)` names a row."""
        from specc.data_messages import describe
        return self.unreadable + describe(self, {p.name: p for p in self.plans}, lambda at: where(*at))


def _count(record: list, n: int, at: tuple[int, int]):
    record[0] += n
    if record[1] is None:
        record[1] = at
