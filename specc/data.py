"""Merlin parquet data -> padded model batches, streamed by row groups, sharded across processes, in bounded memory.

`open_dataset` reads the footers (instant: files, columns, types), then validates every row in one streamed pass
(`specc.data_check`) and raises one `DataError` listing every problem of every kind found, footers' and values'
alike. The `SequenceDataset` it returns (`specc.data_stream`) reads its epochs as they are trained on.
Reading is pyarrow's (the dataset's record batches; no merlin needed): merlin-core's CPU path flattens list columns
with a Python loop, about 35 s per million sessions of 10 items, where pyarrow hands over the buffers.
"""
from __future__ import annotations

import os
from typing import Sequence

from specc.data_check import Scan, groups_of, scan
from specc.data_columns import plan_columns
from specc.data_files import read_footers, resolve_files
from specc.data_stream import SHUFFLE_ROWS, SequenceDataset
from specc.errors import DataError
from specc.schema import Schema

__all__ = ["open_dataset", "SequenceDataset"]


def open_dataset(path, schema: Schema, columns: Sequence[str], *, item_column: str | None, max_length: int | None,
                 min_length: int = 1, rank: int = 0, world_size: int = 1, shuffle_buffer: int = SHUFFLE_ROWS,
                 exchange=None) -> SequenceDataset:
    """Open and validate parquet data for a model, as process `rank` of `world_size`; raises `DataError` listing
    every problem found. Each row keeps its most recent `max_length` values (None: all of them). With `exchange` (every process's object from this one's, in rank order: e.g. a
    distributed context's `all_gather_object`) each process validates about 1/world_size of the rows and the
    findings are merged; without it, each validates all of them."""
    source = os.fspath(path)
    columns = list(dict.fromkeys(columns))
    if item_column is not None and item_column not in columns:
        columns.append(item_column)
    if max_length is not None and max_length < 1:
        raise DataError([f"max_length must be >= 1 (got {max_length})"], source=source)
    if not columns:
        raise ValueError("columns (or item_column) must name at least one column to read")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    if shuffle_buffer < 1:
        raise ValueError("shuffle_buffer must be >= 1")

    files, problems = resolve_files(source)
    if problems:
        raise DataError(problems, source=source)
    footers = read_footers(files, columns)
    if footers.arrow_schema is None:
        raise DataError(footers.problems or [f"no readable parquet file under {source!r}"], source=source)
    problems = list(footers.problems)
    plans = plan_columns(schema, columns, footers.arrow_schema, problems, footers.unusable)
    list_names = [p.name for p in plans if p.is_list]
    # a scalar item column is allowed (one item per row); then lengths come from the first list column
    length_column = item_column if item_column in list_names else (list_names[0] if list_names else None)
    shared = exchange is not None and world_size > 1
    found = scan(footers, plans, item_column=item_column, length_column=length_column, min_length=min_length,
                 groups=groups_of(footers.row_groups, rank, world_size) if shared else None)
    if shared:
        found = Scan.merge(exchange(found))
    problems += found.findings.problems(footers.where)
    if problems:
        raise DataError(problems, source=source)
    n_rows = int(found.kept.sum())
    if n_rows == 0:
        what = f"fewer than {min_length} items in {length_column!r}" if min_length > 1 else \
            f"an empty {length_column!r}"
        raise DataError([f"every row ({found.n_total}) has {what}: nothing to train or evaluate on"], source=source)
    if n_rows < world_size:
        raise DataError([f"{n_rows} usable row(s) cannot be shared by {world_size} processes: every process needs "
                         "at least one"], source=source)
    file_starts, start = [], 0
    for rows in footers.file_rows:
        file_starts.append(start)
        start += rows
    return SequenceDataset(path=source, schema=schema, columns=columns, n_rows=n_rows,
                           n_skipped=found.n_total - n_rows, max_length=max_length, item_column=item_column,
                           rank=rank, world_size=world_size, shuffle_buffer=shuffle_buffer,
                           _files=footers.files, _groups=footers.row_groups, _kept=found.kept,
                           _file_starts=file_starts, _plans=plans, _length_column=length_column,
                           _min_length=min_length, _item_counts=found.findings.item_counts)
