"""The time column: which types are times, and each as a naive UTC Datetime("us")."""
from __future__ import annotations

import polars as pl


def is_time_like(dtype) -> bool:
    return dtype.is_temporal() and dtype not in (pl.Duration, pl.Time) or dtype.is_numeric() or dtype == pl.String


def time_expr(column: str, dtype, unit: str) -> pl.Expr:
    """The time column as a naive UTC Datetime("us"); null where a text time cannot be parsed."""
    col = pl.col(column)
    if dtype == pl.String:
        return col.str.to_datetime(strict=False, time_unit="us", time_zone="UTC").dt.replace_time_zone(None)
    if dtype.is_integer():
        return pl.from_epoch(col.cast(pl.Int64), time_unit=unit).dt.cast_time_unit("us")
    if dtype.is_numeric():   # floating-point seconds (or another unit)
        per_second = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[unit]
        return pl.from_epoch((col.cast(pl.Float64) * per_second).round().cast(pl.Int64), time_unit="us")
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us"))
    if getattr(dtype, "time_zone", None):
        col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return col.dt.cast_time_unit("us")
