"""One arrow record batch as numpy, which of its rows a model can use, and those rows as a padded batch.

Id 0 is padding: trailing 0s in the item column (pre-padded data, e.g. NVTabular ListSlice with pad=True) are not
part of a sequence, and the other list columns of the row are cut to the same length. A row is kept when its
sequence holds at least `min_length` items; it keeps its most recent `max_length` values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specc.data_columns import ColumnPlan


@dataclass
class Chunk:
    """A record batch's columns: (values, int64 offsets from 0) for lists, (values, None) for scalars."""
    n: int
    columns: dict[str, tuple[np.ndarray, np.ndarray | None]]
    nulls: dict[str, np.ndarray]       # rows holding a null, for each column that holds one (read as null_fill)

    @staticmethod
    def read(record_batch, plans: list[ColumnPlan]) -> "Chunk":
        columns, nulls = {}, {}
        for p in plans:
            values, off, null_rows = arrow_column(record_batch.column(record_batch.schema.get_field_index(p.name)),
                                                  p.null_fill)
            columns[p.name] = (values, off)
            if null_rows.size:
                nulls[p.name] = null_rows
        return Chunk(record_batch.num_rows, columns, nulls)


def arrow_column(arr, fill=0) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(values, offsets, the row of each null) of an arrow column chunk, as numpy: offsets start at 0 and index
    `values` for a list column, None for a scalar one. A null list and a null inside a list each count once;
    nulls inside are read as `fill`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    null_rows = [np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))] if arr.null_count else []
    values, off = arr, None
    if pa.types.is_fixed_size_list(arr.type):
        off = np.arange(arr.offset, arr.offset + len(arr) + 1, dtype=np.int64) * arr.type.list_size
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        off = np.asarray(arr.offsets, dtype=np.int64)      # they index arr.values directly, even when sliced
    if off is not None:
        values = arr.values.slice(off[0], off[-1] - off[0])
        off = off - off[0]
        if values.null_count:
            inner = np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))
            null_rows.append(np.searchsorted(off, inner, side="right") - 1)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if values.null_count:
        values = pc.fill_null(values, pa.scalar(fill).cast(values.type))
    return (values.to_numpy(zero_copy_only=False), off,
            np.unique(np.concatenate(null_rows)) if len(null_rows) > 1 else
            (null_rows[0] if null_rows else np.zeros(0, np.int64)))


@dataclass
class Lengths:
    """Per row of a chunk: each list column's length as stored, the sequence's length without trailing padding
    (`items`, None when the item column is not a list) and how many non-zero ids it holds (`ids`)."""
    stored: dict[str, np.ndarray]
    items: np.ndarray | None
    ids: np.ndarray | None

    @staticmethod
    def of(chunk: Chunk, item_column: str | None) -> "Lengths":
        stored = {name: np.diff(off) for name, (_, off) in chunk.columns.items() if off is not None}
        items = ids = None
        if item_column in stored:
            items, ids = unpadded(*chunk.columns[item_column])
        return Lengths(stored, items, ids)

    def used(self) -> dict[str, np.ndarray]:
        """Each list column's length once cut to where the items stop."""
        if self.items is None:
            return self.stored
        return {name: np.minimum(length, self.items) for name, length in self.stored.items()}

    def kept(self, n: int, length_column: str | None, min_length: int) -> np.ndarray:
        """bool [n]: the rows whose sequence is long enough to use."""
        if length_column is None:
            return np.ones(n, dtype=bool)
        return self.used()[length_column] >= max(min_length, 1)


def unpadded(values: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a list column: its length without the trailing 0s (padding), and how many non-zero values it
    holds (fewer than that length where a 0 comes before a non-zero value)."""
    nonzero = np.flatnonzero(values[:off[-1]] != 0)
    before_end = np.searchsorted(nonzero, off[1:])
    count = before_end - np.searchsorted(nonzero, off[:-1])
    length = np.zeros(len(count), dtype=np.int64)
    has = count > 0
    length[has] = nonzero[before_end[has] - 1] + 1 - off[:-1][has]
    return length, count
