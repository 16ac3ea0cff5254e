"""The per-partition step: one bucket of encoded events (every event of its sessions) -> session rows.

Shared by the local engine (polars, bucket by bucket) and the Dask engine (one call per partition on a worker).
Duplicates are events equal in key, time and every column kept (after rare values are merged into one id);
the first in log order stays. Events are ordered by time within a session, ties in log order (stable).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from specc.prepare.continuous import as_continuous
from specc.prepare.source import ROW
from specc.prepare.stats import TIME

START, END, LENGTH = "__start", "__end", "__length"
SESSION_INDEX = "session_index"


@dataclass(frozen=True)
class Layout:
    """What the step needs to know: the key, the per-event columns, and the options."""
    key: str
    item: str                              # the encoded item column (per event)
    event_columns: tuple[str, ...]         # every per-event column turned into a list, item first
    dedupe_columns: tuple[str, ...]        # what makes two events the same (item features follow the item)
    continuous: tuple[str, ...]            # null and non-finite values become 0.0
    gap_us: int | None                     # user mode: a longer gap starts a new session
    min_length: int
    derive: tuple[str, ...]
    time: str                              # the log's time column: `derive timestamp` lists it under its name
    derived_lists: tuple[str, ...]         # the per-event columns derive adds, after the event columns

    @property
    def group(self) -> list[str]:
        return [self.key, SESSION_INDEX] if self.gap_us else [self.key]


@dataclass
class StepCounts:
    duplicates: int = 0
    kept: int = 0
    too_short: int = 0
    events: int = 0

    def add(self, other: "StepCounts") -> None:
        for name in ("duplicates", "kept", "too_short", "events"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def sessions_of(events: pl.DataFrame, layout: Layout) -> tuple[pl.DataFrame, StepCounts]:
    """Session rows (the group key, `<column>-list` lists in time order, derived features, START/END/LENGTH)."""
    n = len(events)
    events = _without_duplicates(_in_time_order(events, layout.key), layout)
    events = events.with_columns([as_continuous(c) for c in layout.continuous])
    events = _mark_sessions(events, layout).rechunk()
    starts = events["__new"].arg_true().to_numpy()
    offsets = np.append(starts, len(events)).astype(np.int32)
    rows = events[starts].select(*layout.group, pl.col(TIME).alias(START)).with_columns(
        events[TIME].gather(offsets[1:] - 1).alias(END), pl.Series(LENGTH, np.diff(offsets).astype(np.int64)))
    if "timestamp" in layout.derive:
        events = events.with_columns(pl.col(TIME).dt.epoch("s").alias(layout.time))
    lists = [*layout.event_columns, *layout.derived_lists]
    rows = rows.with_columns([_as_lists(f"{c}-list", offsets, events[c]) for c in lists])
    kept = rows.filter(pl.col(LENGTH) >= layout.min_length)
    if "weekday" in layout.derive:
        kept = kept.with_columns(pl.col(START).dt.weekday().cast(pl.Int64).alias("weekday"))
    if "hour" in layout.derive:
        kept = kept.with_columns((pl.col(START).dt.hour().cast(pl.Int64) + 1).alias("hour"))
    counts = StepCounts(duplicates=n - len(events), kept=len(kept), too_short=len(rows) - len(kept),
                        events=int(kept[LENGTH].sum() or 0))
    return kept.select(*layout.group, *[f"{c}-list" for c in lists], *(d for d in ("weekday", "hour")
                                                                        if d in layout.derive), START, END, LENGTH), counts


def _in_time_order(events: pl.DataFrame, key: str) -> pl.DataFrame:
    """Events sorted by key, then time, ties in log order. Logs are mostly written in time order: then a stable
    sort by key alone is enough (2-3x cheaper than sorting by three columns), which is checked, not assumed."""
    by_key = events.sort(ROW).sort(key, maintain_order=True)
    back_in_time = (pl.col(key) == pl.col(key).shift()) & (pl.col(TIME) < pl.col(TIME).shift())
    if not by_key.select(back_in_time.any()).item():
        return by_key
    return events.sort([key, TIME, ROW])


def _without_duplicates(events: pl.DataFrame, layout: Layout) -> pl.DataFrame:
    """On events sorted by key, time and log position: the first of each set of equal events. Only events that
    share key and time with a neighbour can be duplicates, so only those (usually few) are compared whole."""
    same = ((pl.col(layout.key) == pl.col(layout.key).shift()) & (pl.col(TIME) == pl.col(TIME).shift())).fill_null(False)
    tied = events.select(same | same.shift(-1).fill_null(False)).to_series()
    if not tied.any():
        return events
    candidates = events.with_row_index("__i").filter(tied)
    repeated = candidates.filter(~pl.struct(layout.key, TIME, *layout.dedupe_columns).is_first_distinct())["__i"]
    keep = np.ones(len(events), dtype=bool)
    keep[repeated.to_numpy()] = False
    return events.filter(pl.Series(keep))


def _mark_sessions(events: pl.DataFrame, layout: Layout) -> pl.DataFrame:
    """On events sorted by key and time: `__new` where a session starts, its `session_index` (with a gap) and the
    time since the previous event of the session. Vectorised over the sorted frame, no per-group work."""
    new_key = (pl.col(layout.key) != pl.col(layout.key).shift()).fill_null(True)
    new = new_key
    if layout.gap_us:
        new = new_key | (pl.col(TIME).diff() > pl.duration(microseconds=layout.gap_us))
    events = events.with_columns(new.alias("__new"), new_key.alias("__new_key"))
    if layout.gap_us:
        count = pl.col("__new").cum_sum()
        events = events.with_columns(
            (count - pl.when(pl.col("__new_key")).then(count).forward_fill()).cast(pl.Int32).alias(SESSION_INDEX))
    if "time_since_prev" in layout.derive:
        since = pl.when(pl.col("__new")).then(0).otherwise(pl.col(TIME).diff().dt.total_microseconds()) / 1e6
        events = events.with_columns(since.cast(pl.Float32).alias("time_since_prev"))
    return events


def _as_lists(name: str, offsets: np.ndarray, values: pl.Series) -> pl.Series:
    """A list column from a flat column and row offsets, without copying per row."""
    array = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values.to_arrow())
    return pl.Series(name, array)
