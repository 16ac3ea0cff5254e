"""A run's id mappings: raw values <-> the ids a model sees.

`specc data prepare` writes DIR/categories/<column>.parquet (`id`, `value`). A run trained on DIR/train records
them (`record`, called where the run's files are saved) as RUN_DIR/categories, so `specc recommend` can write raw
item values and a server can take raw ids. A raw value the mapping does not know is never guessed: `encode`
raises a DataError naming each row, or gives the column's explicit out-of-vocabulary id 1 where it has one.
"""
from __future__ import annotations

import functools
import glob
import os
import shutil
from pathlib import Path

import numpy as np

from specc.errors import DataError, UserError

CATEGORIES = "categories"
OOV = 1


def find_categories(data_path) -> Path | None:
    """The categories folder of prepared data: beside the data's folder (DIR/train -> DIR/categories)."""
    path = str(data_path)
    if any(ch in path for ch in "*?["):
        path = os.path.dirname(path.split("*")[0].split("?")[0].split("[")[0]) or "."
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    for candidate in (folder / CATEGORIES, folder.parent / CATEGORIES):
        if candidate.is_dir() and glob.glob(str(candidate / "*.parquet")):
            return candidate
    return None


def record(run_dir, data_path) -> None:
    """Copy the mappings of the training data (if it was prepared by specc) into RUN_DIR/categories."""
    source = find_categories(data_path)
    target = Path(run_dir) / CATEGORIES
    if source is None or target.is_dir():
        return
    staging = target.with_name(CATEGORIES + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    staging.replace(target)


class Mapping:
    """One column's mapping: `values[id]` is the raw value of id (None for padding and unused ids)."""

    def __init__(self, column: str, ids: np.ndarray, values, oov: bool):
        import pyarrow as pa
        self.column, self.oov = column, oov
        size = int(ids.max()) + 1 if len(ids) else 1
        positions = np.full(size, -1, dtype=np.int64)
        positions[ids] = np.arange(len(ids))
        self._ids, self._raw = ids, pa.array(values)
        self._values = self._raw.take(pa.array(positions, mask=positions < 0))

    @functools.cached_property
    def _index(self) -> dict:
        """raw value -> id, built on the first lookup: ~1.5 s for a million string ids, which reading the values
        (decoding, comparing two preparations' mappings) does not need."""
        return {v: int(i) for i, v in zip(self._ids.tolist(), self._raw.to_pylist()) if v is not None}

    def ready(self) -> "Mapping":
        """Build the raw value -> id table now (a server does, before its first request)."""
        self._index  # noqa: B018 - the cached property's side effect
        return self

    @property
    def values(self):
        """The raw value of each id as a pyarrow array (null for padding and unused ids)."""
        return self._values

    @property
    def value_type(self):
        """The pyarrow type of the raw values."""
        return self._values.type

    def known_values(self) -> list:
        """The raw values that have an id (not padding, not the out-of-vocabulary bucket)."""
        return list(self._index)

    @classmethod
    def load(cls, run_dir, column: str) -> "Mapping | None":
        """The mapping of `column` (a session column such as `item_id-list`, or the raw name), or None."""
        import pyarrow.parquet as pq
        name = column[:-len("-list")] if column.endswith("-list") else column
        path = Path(run_dir) / CATEGORIES / f"{name}.parquet"
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
            ids = np.asarray(table.column("id").to_numpy(), dtype=np.int64)
        except Exception as exc:   # noqa: BLE001 - pyarrow raises several types for damaged files
            raise UserError(f"{path}: cannot read the id mapping ({exc})") from None
        values = table.column("value").combine_chunks()
        has_oov = bool(len(ids)) and OOV in ids.tolist() and values[ids.tolist().index(OOV)].as_py() is None
        return cls(name, ids, values, has_oov)

    def take(self, ids: np.ndarray):
        """The raw values of ids as a pyarrow array (null for padding and unused ids); every id must be one the
        mapping holds."""
        import pyarrow as pa
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self._values)):
            raise UserError(f"ids outside the mapping of {self.column!r} (0..{len(self._values) - 1}); the run and "
                            "its categories do not belong together")
        return self._values.take(pa.array(ids))

    def decode(self, rows: list[list[int]]) -> list[list]:
        """Raw values for rows of ids (every id must be one the mapping holds)."""
        values = self.take(np.fromiter((i for row in rows for i in row), dtype=np.int64)).to_pylist()
        out, start = [], 0
        for row in rows:
            out.append(values[start:start + len(row)])
            start += len(row)
        return out

    def encode(self, rows: list[list]) -> list[list[int]]:
        """Ids for rows of raw values; an unknown value is the OOV id where the column has one, else a DataError
        listing the rows and values."""
        flat = self.lookup([v for row in rows for v in row]).tolist()
        out, unknown, start = [], [], 0
        for r, row in enumerate(rows):
            ids, start = flat[start:start + len(row)], start + len(row)
            unknown += [(r, v) for v, i in zip(row, ids) if i < 0]
            out.append(ids)
        if unknown:
            shown = "; ".join(f"row {r}: {v!r}" for r, v in unknown[:5])
            raise DataError([f"{len(unknown)} value(s) of {self.column!r} unknown to the model's mapping ({shown}"
                             f"{' ...' if len(unknown) > 5 else ''}); the model cannot score items it never saw"])
        return out

    def lookup(self, values) -> np.ndarray:
        """The ids of a sequence of raw values as int64; an unknown value gets the column's OOV id where it has
        one, else -1. (A dict lookup per value: pyarrow's index_in would hash the whole catalog on every call.)"""
        miss = OOV if self.oov else -1
        return np.fromiter((self._index.get(v, miss) for v in values), dtype=np.int64, count=len(values))


def raw_item_ids(run_dir, column: str, rows: list[list[int]], ids: str | None) -> list[list]:
    """`specc recommend`'s item lists in the form asked for: raw values by default where the run has a mapping
    of `column`, the model's ids with `ids="internal"`."""
    if ids == "internal":
        return rows
    mapping = Mapping.load(run_dir, column)
    if mapping is None:
        if ids == "raw":
            raise UserError(f"{run_dir} has no id mapping for {column!r} (it was not trained on data prepared by "
                            "`specc data prepare`); use --ids internal")
        return rows
    return mapping.decode(rows)
