"""`--item-features ITEMS`: per-item columns joined into the sessions by raw item id.

ITEMS is a parquet or CSV file (or folder) with the item column (named as in the log) and one row per item.
Each other column becomes a list column aligned with the items: text, integer and boolean columns are
categorical (ids as in `categories.py`, 1 for null and for items that ITEMS does not list), floating-point
columns continuous (0.0 for null, missing or not finite), and a fixed-size list of floats a vector, which is
written once per item to `DIR/item_features.parquet` (keyed by item id) instead of being repeated in every session.
"""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from specc.errors import DataError
from specc.prepare import categories
from specc.prepare.source import polars_problem, resolve_files


@dataclass(frozen=True)
class ItemFeatures:
    table: pl.DataFrame                 # the raw item value, encoded categorical columns, floats, vectors
    categorical: tuple[str, ...]
    continuous: tuple[str, ...]
    vectors: dict                       # column -> dim
    mappings: tuple[categories.Mapping, ...]
    source: str

    @property
    def per_event(self) -> pl.DataFrame:
        """What is joined into the events: everything but the vectors."""
        return self.table.drop(list(self.vectors))


def load_item_features(path: str, item: str, item_dtype, taken: set[str], previous: str | None) -> ItemFeatures:
    files = resolve_files([path])
    try:
        table = pl.concat([pl.read_parquet(f) if f.lower().endswith((".parquet", ".parq", ".pq")) else pl.read_csv(f)
                           for f in files], how="vertical")
    except pl.exceptions.PolarsError as exc:
        raise polars_problem(exc, path) from None
    problems = _problems(table, item, item_dtype, taken)
    if problems:
        raise DataError(problems, source=path)
    kinds = {c: _kind(table[c]) for c in table.columns if c != item}
    bad = [f"column {c!r} is a {table[c].dtype}; an item feature is text, a number or a fixed-size list of floats"
           for c, k in kinds.items() if k is None]
    if bad:
        raise DataError(bad, source=path)
    mappings = []
    for col in [c for c, k in kinds.items() if k == "categorical"]:
        prev = categories.read_previous(previous, col) if previous else None
        counts = table.group_by(col).agg(pl.len()).rename({col: "value"})
        mapping = categories.fit(col, counts, oov=True, previous=prev)
        table = categories.encode(table.lazy(), mapping, col, "__id").collect().drop(col).rename({"__id": col})
        mappings.append(mapping)
    vectors = {c: table[c].dtype.size if isinstance(table[c].dtype, pl.Array) else int(table[c].list.len()[0])
               for c, k in kinds.items() if k == "vector"}
    table = table.with_columns([pl.col(c).cast(pl.Array(pl.Float32, d)) for c, d in vectors.items()])
    return ItemFeatures(table, tuple(c for c, k in kinds.items() if k == "categorical"),
                        tuple(c for c, k in kinds.items() if k == "continuous"), vectors, tuple(mappings), path)


def _problems(table: pl.DataFrame, item: str, item_dtype, taken: set[str]) -> list[str]:
    if item not in table.columns:
        return [f"no column {item!r} (the item column of the log); its columns are {', '.join(table.columns)}"]
    problems = []
    if table[item].dtype != item_dtype:
        problems.append(f"column {item!r} is {table[item].dtype}, but {item_dtype} in the log; ids would not match")
    if table[item].null_count():
        problems.append(f"column {item!r} is null in {table[item].null_count()} row(s)")
    repeated = table.filter(pl.col(item).is_duplicated())[item].unique().head(3).to_list()
    if repeated:
        problems.append(f"items listed more than once, e.g. {repeated}; ITEMS has one row per item")
    clash = sorted(taken & set(table.columns) - {item})
    if clash:
        problems.append(f"column(s) {', '.join(map(repr, clash))} are also columns of the log or derived; rename them")
    if len(table.columns) < 2:
        problems.append("no feature columns besides the item column")
    return problems


def _kind(series: pl.Series) -> str | None:
    dtype = series.dtype
    if dtype.is_float():
        return "continuous"
    if isinstance(dtype, (pl.Array, pl.List)):
        lengths = series.list.len() if isinstance(dtype, pl.List) else None
        fixed = lengths is None or (lengths.null_count() == 0 and lengths.n_unique() == 1)
        return "vector" if dtype.inner.is_numeric() and fixed and series.null_count() == 0 else None
    if dtype.is_integer() or dtype in (pl.String, pl.Boolean, pl.Categorical) or dtype.is_temporal():
        return "categorical"
    return None
