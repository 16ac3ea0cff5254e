"""A validated dataset's epochs: this process's share of the rows, read as it is needed, in padded batches.

Each epoch reads only this process's share (`specc.data_shards`) with pyarrow (`ParquetFile.iter_batches`, one
record batch of `READ_ROWS` rows at a time), shuffled through a buffer of `shuffle_buffer` rows, and pads each
batch to its longest row (`specc.data_rows`). Memory holds a record batch, the buffer and one count per row group.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from specc.data_chunks import Chunk, Lengths
from specc.data_columns import ColumnPlan
from specc.data_files import RowGroup
from specc.data_rows import Rows, cut, shuffled
from specc.data_shards import batch_sizes, epoch_order, pieces, share, steps
from specc.errors import DataError
from specc.schema import Schema

READ_ROWS = 1 << 12            # rows per record batch read while training
SHUFFLE_ROWS = 1 << 14         # rows in the shuffle buffer
_ROW = "__row__"               # the source row number, carried beside the columns


@dataclass
class SequenceDataset:
    path: str
    schema: Schema
    columns: list[str]
    n_rows: int                    # usable rows over every process's share
    n_skipped: int
    max_length: int | None         # the most recent values each row keeps; None: all of them
    item_column: str | None = None
    rank: int = 0
    world_size: int = 1
    shuffle_buffer: int = SHUFFLE_ROWS
    _files: list[str] = field(default_factory=list, repr=False)
    _groups: list[RowGroup] = field(default_factory=list, repr=False)
    _kept: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _file_starts: list[int] = field(default_factory=list, repr=False)   # each file's first row among all rows
    _plans: list[ColumnPlan] = field(default_factory=list, repr=False)
    _length_column: str | None = field(default=None, repr=False)
    _min_length: int = field(default=1, repr=False)
    _item_counts: np.ndarray | None = field(default=None, repr=False)
    _batch_size: int | None = field(default=None, repr=False)
    _drop_last: bool = field(default=False, repr=False)

    @property
    def n_total(self) -> int:
        """Rows read from the data: those kept (`n_rows`) and those skipped as too short (`n_skipped`)."""
        return self.n_rows + self.n_skipped

    @property
    def files(self) -> list[str]:
        """The parquet files read, in reading order (source rows are counted over them in this order)."""
        return list(self._files)

    @property
    def rank_rows(self) -> int:
        """Usable rows in this process's share of each epoch."""
        start, stop = share(self.n_rows, self.rank, self.world_size)
        return stop - start

    def steps(self, batch_size: int, drop_last: bool = False) -> int:
        """Batches per epoch, the same on every process."""
        return steps(self.n_rows, self.world_size, batch_size, drop_last)

    def batches(self, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                drop_last: bool = False) -> Iterator[dict]:
        """This process's batches of `{column: tensor}`: list columns `[B, longest row in the batch]` (at most
        max_length), scalars `[B]`; int64 ids, float32 values. `batch_size` rows per batch on this process. With
        `shuffle`, the order is drawn from `(seed, epoch)` (and the rank, for the shuffle buffer) alone."""
        for _, batch in self._batches(batch_size, shuffle, seed, epoch, drop_last):
            yield batch

    def indexed_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, dict]]:
        """(source rows, batch) in reading order: each row's 0-based index among all `n_total` rows read (counted
        across files in reading order, skipped rows included), and the batch as `batches` gives it."""
        return self._batches(batch_size, False, 0, 0, False)

    def source_rows(self) -> np.ndarray:
        """int64: for each row of this process's share, in the order `batches(..., shuffle=False)` yields them,
        its 0-based index among all `n_total` rows read. Streams this process's share once."""
        parts = [rows.values[_ROW] for rows in self._stream(epoch_order(len(self._groups), False, 0, 0))]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        if self._batch_size is None:
            return self.n_rows
        return self.steps(self._batch_size, self._drop_last)

    def item_counts(self, cardinality: int):
        """float `[cardinality]`: how often each item id occurs in `item_column` over the usable rows of every
        share (padding id 0 excluded; counted before truncation to max_length)."""
        import torch
        out = np.zeros(int(cardinality), dtype=np.float64)
        if self._item_counts is not None:
            k = min(len(self._item_counts), int(cardinality))
            out[:k] = self._item_counts[:k]
        out[0] = 0.0
        return torch.from_numpy(out.astype(np.float32))

    # ---- reading ----------------------------------------------------------------------------------------
    def _batches(self, batch_size, shuffle, seed, epoch, drop_last) -> Iterator[tuple[np.ndarray, dict]]:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._batch_size, self._drop_last = batch_size, drop_last
        n_steps = self.steps(batch_size, drop_last)
        try:
            sizes = batch_sizes(self.rank_rows, batch_size, n_steps, drop_last)
        except ValueError:
            raise DataError([f"{self.n_rows} rows do not give each of {self.world_size} processes {n_steps} "
                             f"batches of at most {batch_size}: use a larger batch size per process or drop_last"],
                            source=self.path) from None
        rows = self._stream(epoch_order(len(self._groups), shuffle, seed, epoch))
        if shuffle:
            rows = shuffled(rows, self.shuffle_buffer, np.random.default_rng(
                [int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, self.rank]))
        for part in cut(rows, sizes):
            yield part.values[_ROW], part.batch(self._plans)

    def _stream(self, order: np.ndarray) -> Iterator[Rows]:
        """This process's usable rows in `order` of the row groups, cut and truncated, as they are read."""
        import pyarrow.parquet as pq
        names = [p.name for p in self._plans]
        start, stop = share(self.n_rows, self.rank, self.world_size)
        for g, first, last in pieces(self._kept, order, start, stop):
            group = self._groups[g]
            seen, row = 0, self._file_starts[group.file] + group.first_row
            with pq.ParquetFile(self._files[group.file]) as file:
                for rb in file.iter_batches(batch_size=READ_ROWS, row_groups=[group.index], columns=names):
                    chunk = Chunk.read(rb, self._plans)
                    lengths = Lengths.of(chunk, self.item_column)
                    keep = lengths.kept(chunk.n, self._length_column, self._min_length)
                    rows = Rows.kept(chunk, lengths, keep, self.max_length)
                    rows.values[_ROW] = row + np.flatnonzero(keep)
                    row += chunk.n
                    lo, hi = max(first - seen, 0), min(last - seen, rows.n)
                    seen += rows.n
                    if lo < hi:
                        yield rows.take(slice(lo, hi))
                    if seen >= last:
                        break
