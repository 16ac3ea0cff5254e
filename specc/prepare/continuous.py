"""Per-event continuous columns: which types are accepted, and each value as the float32 that is written.

A value that is null or not finite as a float32 (NaN, +-inf, or a float64 beyond float32's range) is written as
0.0 and counted (`n_null_continuous`): `specc train` refuses NaN and inf in its data.
"""
from __future__ import annotations

import polars as pl

ACCEPTED = "an integer, float, decimal or boolean column"


def is_continuous_type(dtype) -> bool:
    # an all-null parquet column has the type Null: it is written as 0.0 throughout, like any null
    return dtype.is_numeric() or dtype in (pl.Boolean, pl.Null)


def type_hint(dtype) -> str:
    """What to do instead with a column that cannot be continuous ("" where there is no better use)."""
    if dtype in (pl.String, pl.Categorical, pl.Enum):
        return "; give text as --categorical"
    if dtype in (pl.Datetime, pl.Date):
        return "; a time can be the --time column, and --derive weekday,hour,time_since_prev gives features of it"
    if isinstance(dtype, (pl.List, pl.Array)):
        return "; per-item vectors go in --item-features"
    return ""


def as_continuous(column: str) -> pl.Expr:
    """The column as float32, 0.0 where the value is null or not finite."""
    value = pl.col(column).cast(pl.Float32)
    return pl.when(value.is_finite()).then(value).otherwise(pl.lit(0.0, pl.Float32)).alias(column)


def is_replaced(column: str) -> pl.Expr:
    """True where `as_continuous` writes 0.0 for a null or non-finite value."""
    return pl.col(column).cast(pl.Float32).is_finite().fill_null(False).not_()
