"""The per-partition step: one bucket of encoded events (every event of its sessions) -> session rows.

Shared by the local engine (polars, bucket by bucket) and the Dask engine (one call per partition on a worker).
Duplicates are events equal in key, time and every column kept (after rare values are merged into one id);
the first in log order stays. Events are ordered by time within a session, ties in log order (stable).
"""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl

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
    continuous: tuple[str, ...]            # nulls become 0.0
    gap_us: int | None                     # user mode: a longer gap starts a new session
    min_length: int
    derive: tuple[str, ...]

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
    events = events.sort(ROW).unique(subset=[layout.key, TIME, *layout.dedupe_columns], keep="first",
                                     maintain_order=True)
    duplicates = n - len(events)
    events = events.sort([layout.key, TIME, ROW]).with_columns(
        [pl.col(c).fill_null(0.0).cast(pl.Float32) for c in layout.continuous])
    if layout.gap_us:
        gap = pl.col(TIME).diff().over(layout.key) > pl.duration(microseconds=layout.gap_us)
        events = events.with_columns(gap.fill_null(False).alias(SESSION_INDEX)).with_columns(
            pl.col(SESSION_INDEX).cum_sum().over(layout.key).cast(pl.Int32))
    if "time_since_prev" in layout.derive:
        since = pl.col(TIME).diff().over(layout.group).dt.total_microseconds().fill_null(0) / 1e6
        events = events.with_columns(since.cast(pl.Float32).alias("time_since_prev"))
    lists = [*layout.event_columns] + (["time_since_prev"] if "time_since_prev" in layout.derive else [])
    rows = events.group_by(layout.group, maintain_order=True).agg(
        *[pl.col(c).alias(f"{c}-list") for c in lists],
        pl.col(TIME).first().alias(START), pl.col(TIME).last().alias(END), pl.len().cast(pl.Int64).alias(LENGTH))
    kept = rows.filter(pl.col(LENGTH) >= layout.min_length)
    if "weekday" in layout.derive:
        kept = kept.with_columns(pl.col(START).dt.weekday().cast(pl.Int64).alias("weekday"))
    if "hour" in layout.derive:
        kept = kept.with_columns((pl.col(START).dt.hour().cast(pl.Int64) + 1).alias("hour"))
    counts = StepCounts(duplicates=duplicates, kept=len(kept), too_short=len(rows) - len(kept),
                        events=int(kept[LENGTH].sum() or 0))
    return kept, counts
