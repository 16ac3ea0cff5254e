"""Categorify: raw values -> ids, the mapping files `DIR/categories/<column>.parquet` (`id`, `value`), and their
reuse across preparations.

Ids: 0 is padding everywhere. Item ids are 1..n by descending frequency (ties by value), as NVTabular's
Categorify orders them and the `log_uniform` sampler assumes; events without an item are dropped. Every other
categorical column keeps id 1 for the values it cannot tell apart -- null, rarer than `min_frequency`, and
values unseen at preparation time -- and numbers its values from 2, by frequency. With an earlier mapping every
known value keeps its id and new values get new ids after the largest one, again by frequency.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import polars as pl

from specc.errors import DataError

OOV = 1


@dataclass(frozen=True)
class Mapping:
    column: str
    values: pl.DataFrame     # "value" (the raw dtype) and "id" (Int64), the known values only
    oov: bool                # id 1 is the null / rare / unknown bucket
    n_new: int               # values added to a reused mapping
    reused: bool

    @property
    def cardinality(self) -> int:
        """Rows of the embedding table: the largest id + 1 (padding included)."""
        top = self.values["id"].max()
        return int(top if top is not None else (OOV if self.oov else 0)) + 1

    def summary(self) -> dict:
        return {"cardinality": self.cardinality, "values": len(self.values), "oov_id": OOV if self.oov else None,
                "new_values": self.n_new, "reused": self.reused}


def fit(column: str, counts: pl.DataFrame, *, oov: bool, min_frequency: int = 1,
        previous: pl.DataFrame | None = None) -> Mapping:
    """A mapping from `counts` (columns "value", "len"); `previous` is an earlier mapping to extend."""
    counts = counts.filter(pl.col("value").is_not_null())
    if oov and min_frequency > 1:
        counts = counts.filter(pl.col("len") >= min_frequency)
    ranked = counts.sort(["len", "value"], descending=[True, False], nulls_last=True).select("value")
    start = OOV + 1 if oov else 1
    known = pl.DataFrame({"value": pl.Series([], dtype=ranked["value"].dtype), "id": pl.Series([], dtype=pl.Int64)})
    if previous is not None:
        known = previous.with_columns(pl.col("value").cast(ranked["value"].dtype))
        start = max(int(known["id"].max() or 0) + 1, start)
        ranked = ranked.join(known, on="value", how="anti", maintain_order="left")
    new = ranked.with_columns(id=pl.int_range(start, start + len(ranked), dtype=pl.Int64, eager=False))
    return Mapping(column, pl.concat([known, new]), oov, len(new) if previous is not None else 0,
                   previous is not None)


def encode(frame: pl.LazyFrame, mapping: Mapping, source: str, target: str) -> pl.LazyFrame:
    """`frame` with column `target` holding the ids of column `source` (unknown values -> OOV where there is one)."""
    table = mapping.values.lazy().rename({"value": source, "id": target})
    out = frame.join(table, on=source, how="left", maintain_order="none")
    return out.with_columns(pl.col(target).fill_null(OOV)) if mapping.oov else out


def write(mapping: Mapping, folder: str) -> str:
    path = os.path.join(folder, f"{mapping.column}.parquet")
    table = mapping.values.select("id", "value")
    if mapping.oov:
        table = pl.concat([pl.DataFrame({"id": [OOV], "value": pl.Series([None], dtype=table["value"].dtype)}),
                           table])
    table.sort("id").write_parquet(path)
    return path


def read_previous(folder: str, column: str) -> pl.DataFrame | None:
    """The known values of an earlier mapping of `column` in `folder` (DIR or DIR/categories), or None."""
    for candidate in (os.path.join(folder, "categories", f"{column}.parquet"), os.path.join(folder, f"{column}.parquet")):
        if os.path.isfile(candidate):
            try:
                table = pl.read_parquet(candidate)
            except pl.exceptions.PolarsError as exc:
                raise DataError([f"{candidate}: cannot read the mapping ({exc})"]) from None
            if set(table.columns) != {"id", "value"} or not table["id"].dtype.is_integer():
                raise DataError([f"{candidate}: a mapping has the columns id (integer) and value"])
            return table.filter(pl.col("value").is_not_null()).select("value", pl.col("id").cast(pl.Int64))
    return None


def check_compatible(previous: pl.DataFrame, dtype, column: str, where: str) -> None:
    """Raise DataError when an earlier mapping's values cannot be compared with this log's `column`."""
    try:
        previous["value"].cast(dtype, strict=True)
    except pl.exceptions.PolarsError:
        raise DataError([f"{where}: the earlier mapping of {column!r} holds {previous['value'].dtype} values, this "
                         f"log {dtype}; ids would not match"]) from None
