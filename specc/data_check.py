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
from specc.data_files import Footers, RowGroup
from specc.data_findings import Findings

CHUNK_ROWS = 1 << 16


@dataclass
class Scan:
    kept: np.ndarray                  # int64 [row groups]: the rows of each row group a model can use
    n_total: int                      # rows read
    findings: Findings                # with the item counts: float64 [max id + 1] over the rows kept

    @staticmethod
    def merge(parts: list["Scan"]) -> "Scan":
        """The scan of all the row groups that `parts` (each of some of them) read."""
        return Scan(np.sum([p.kept for p in parts], axis=0), sum(p.n_total for p in parts),
                    Findings.merge([p.findings for p in parts]))


def groups_of(row_groups: list[RowGroup], rank: int, world_size: int) -> list[int]:
    """The row groups process `rank` validates: a contiguous run of about 1/world_size of the rows."""
    starts = np.cumsum([0] + [g.n_rows for g in row_groups])[:-1]
    total = sum(g.n_rows for g in row_groups)
    return [i for i, s in enumerate(starts) if rank * total <= s * world_size < (rank + 1) * total]


def scan(footers: Footers, plans: list[ColumnPlan], *, item_column: str | None, length_column: str | None,
         min_length: int, groups: list[int] | None = None) -> Scan:
    """Read the row groups `groups` (default: all) of `footers` once, in order; see the module docstring."""
    import pyarrow.parquet as pq
    findings = Findings(plans, item_column)
    kept = np.zeros(len(footers.row_groups), dtype=np.int64)
    names = [p.name for p in plans]
    n_total, reader = 0, None
    for g in range(len(footers.row_groups)) if groups is None else groups:
        group = footers.row_groups[g]
        if group.file in findings.unreadable or not names:
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
            findings.unreadable[group.file] = (f"cannot read {footers.files[group.file]!r}: {type(exc).__name__}: "
                                               f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
    if reader is not None:
        reader[1].close()
    return Scan(kept, n_total, findings)
