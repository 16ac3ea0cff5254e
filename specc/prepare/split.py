"""Train / valid (/ test) from session rows.

- `time`: the sessions that start latest (`valid_fraction` of them) are valid; sessions starting at the same
  moment as the latest training session stay in train, so the cut is one instant.
- `last` (SASRec's leave-one-out): a sequence of n >= 3 items gives a train row (its first n - 2 items), a valid
  row (the first n - 1: the history and the valid item) and a test row (all n: the history and the test item);
  shorter sequences stay whole in train only.
`max_length` then keeps the most recent items of every row.
"""
from __future__ import annotations

import polars as pl

from specc.errors import DataError
from specc.prepare.sessions import LENGTH, START

HELD_OUT_MIN = 3


def split_last(rows: pl.DataFrame, max_length: int | None) -> dict[str, pl.DataFrame]:
    held = rows.filter(pl.col(LENGTH) >= HELD_OUT_MIN)
    train = rows.with_columns([pl.when(pl.col(LENGTH) >= HELD_OUT_MIN).then(pl.col(c).list.head(pl.col(LENGTH) - 2))
                               .otherwise(pl.col(c)) for c in _lists(rows)])
    valid = held.with_columns([pl.col(c).list.head(pl.col(LENGTH) - 1) for c in _lists(rows)])
    return {name: finish(frame, max_length) for name, frame in (("train", train), ("valid", valid), ("test", held))}


def split_time(rows: pl.DataFrame, cutoff, max_length: int | None) -> dict[str, pl.DataFrame]:
    return {"train": finish(rows.filter(pl.col(START) <= cutoff), max_length),
            "valid": finish(rows.filter(pl.col(START) > cutoff), max_length)}


def time_cutoff(starts: pl.Series, valid_fraction: float):
    """The start of the latest training session: later-starting sessions are valid."""
    n = len(starts)
    if n < 2:
        raise DataError([f"{n} session(s) left after filtering; a time split needs at least 2 (lower --min-length "
                         "or --min-frequency, or give more events)"])
    n_valid = min(max(1, round(n * valid_fraction)), n - 1)
    ordered = starts.sort()
    cutoff = ordered[n - n_valid - 1]
    if ordered[-1] <= cutoff:
        raise DataError([f"the latest {n_valid} session(s) start at the same moment as the training sessions "
                         "before them; a time split cannot separate them (try --split last)"])
    return cutoff


def finish(frame: pl.DataFrame, max_length: int | None) -> pl.DataFrame:
    """The rows as written, and the START and END times of the sessions they come from (`write_splits` reports
    them as the split's time range and drops them)."""
    if max_length:
        frame = frame.with_columns([pl.col(c).list.tail(max_length) for c in _lists(frame)])
    return frame.drop(LENGTH)


def _lists(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.endswith("-list")]
