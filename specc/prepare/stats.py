"""The first pass over the log (streaming): per-file counts and checks, and the value counts Categorify needs."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from specc.errors import DataError
from specc.prepare.continuous import is_replaced
from specc.prepare.source import FILE, Source, polars_problem
from specc.prepare.times import time_expr

TIME = "__time"
EARLIEST, LATEST = datetime(1900, 1, 1), datetime(2200, 1, 1)   # times outside are taken for a wrong --time-unit


@dataclass(frozen=True)
class Stats:
    events: int
    null_item: int
    time_min: object
    time_max: object
    counts: dict          # column -> DataFrame("value", "len") over the events that have an item
    per_file: pl.DataFrame   # FILE, rows, null counts, time range

    @property
    def null_continuous(self) -> dict:
        """Null or non-finite values (0.0 in the output) per continuous column, among the events kept."""
        return {c.split(":", 1)[1]: int(self.per_file[c].sum()) for c in self.per_file.columns if c.startswith("null:")}


def collect_stats(source: Source, spec, categorical: list[str]) -> Stats:
    """Count the log (one streaming pass shared by all queries) and raise DataError for null keys, null or
    unparseable times, naming each file."""
    frame = source.scan([spec.key, spec.time, spec.item, *spec.categorical, *spec.continuous], with_file=True)
    frame = frame.with_columns(time_expr(spec.time, source.dtypes[spec.time], spec.time_unit).alias(TIME))
    unparsed = pl.col(TIME).is_null() & pl.col(spec.time).is_not_null()
    per_file = frame.group_by(FILE).agg(
        rows=pl.len(), null_item=pl.col(spec.item).is_null().sum(), null_key=pl.col(spec.key).is_null().sum(),
        null_time=pl.col(spec.time).is_null().sum(), unparsed=unparsed.sum(),
        example=pl.col(spec.time).filter(unparsed).first().cast(pl.String),
        out_of_range=((pl.col(TIME) < EARLIEST) | (pl.col(TIME) > LATEST)).sum(),
        time_min=pl.col(TIME).min().clip(EARLIEST, LATEST), time_max=pl.col(TIME).max().clip(EARLIEST, LATEST),
        *[(is_replaced(c) & pl.col(spec.item).is_not_null()).sum().alias(f"null:{c}") for c in spec.continuous])
    with_item = frame.filter(pl.col(spec.item).is_not_null())
    queries = [per_file] + [with_item.group_by(c).agg(pl.len()).rename({c: "value"}) for c in categorical]
    try:
        results = pl.collect_all(queries, engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise polars_problem(exc, source.source) from None
    files = results[0].sort(FILE)
    _check(files, spec, source.source)
    return Stats(events=int(files["rows"].sum()), null_item=int(files["null_item"].sum()),
                 time_min=files["time_min"].min(), time_max=files["time_max"].max(),
                 counts=dict(zip(categorical, results[1:])), per_file=files)


def _check(files: pl.DataFrame, spec, source: str) -> None:
    problems = []
    for row in files.iter_rows(named=True):
        where = row[FILE]
        if row["null_key"]:
            problems.append(f"{where}: the {'session' if spec.session else 'user'} column {spec.key!r} is null in "
                            f"{row['null_key']} of {row['rows']} events; every event needs its key")
        if row["null_time"]:
            problems.append(f"{where}: the time column {spec.time!r} is null in {row['null_time']} events")
        if row["out_of_range"]:
            problems.append(f"{where}: the time column {spec.time!r} has {row['out_of_range']} time(s) before "
                            f"{EARLIEST.year} or after {LATEST.year} (read as {spec.time_unit} since 1970 where it is a "
                            "number: is it in another unit? see --time-unit)")
        if row["unparsed"]:
            problems.append(f"{where}: the time column {spec.time!r} holds {row['unparsed']} value(s) that are not "
                            f"times, e.g. {row['example']!r} (use ISO 8601 such as 2024-05-01T12:30:00)")
    if int(files["rows"].sum()) == 0:
        problems.append("the log holds no events")
    elif int(files["rows"].sum()) == int(files["null_item"].sum()):
        problems.append(f"the item column {spec.item!r} is null in every event")
    if problems:
        raise DataError(problems, source=source)
