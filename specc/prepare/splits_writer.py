"""Session rows, bucket by bucket, into DIR/train, DIR/valid (and DIR/test) with their counts.

A leave-one-out split needs nothing global and is written as each bucket comes; a time split first stages the
buckets' sessions and their start times, finds the one cut instant over all of them, then splits each staged part.
"""
from __future__ import annotations

import os

import polars as pl

from specc.prepare.output import write_parquet
from specc.prepare.sessions import START
from specc.prepare.split import split_last, split_time, time_cutoff


class SplitWriter:
    def __init__(self, root: str, kind: str, item_list: str, max_length: int | None, valid_fraction: float):
        self.root, self.kind, self.item_list = root, kind, item_list
        self.max_length, self.valid_fraction = max_length, valid_fraction
        names = ("train", "valid", "test") if kind == "last" else ("train", "valid")
        self.counts = {name: {"sessions": 0, "events": 0} for name in names}
        self.shortest, self.longest = None, 0
        self.cutoff = None
        self._staged: list[str] = []
        self._starts: list[pl.Series] = []

    def add(self, rows: pl.DataFrame) -> None:
        """One bucket's session rows (as `sessions_of` returns them)."""
        if self.kind == "last":
            self._write(split_last(rows, self.max_length), len(self._staged))
            self._staged.append("")
            return
        path = os.path.join(self.root, "_work", "sessions", f"part-{len(self._staged):05d}.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rows.write_parquet(path)
        self._staged.append(path)
        self._starts.append(rows[START])

    def finish(self) -> dict:
        if self.kind == "time":
            self.cutoff = time_cutoff(pl.concat(self._starts), self.valid_fraction)
            for i, path in enumerate(self._staged):
                self._write(split_time(pl.read_parquet(path), self.cutoff, self.max_length), i)
                os.remove(path)
        return self.counts

    def _write(self, frames: dict, part: int) -> None:
        for name, frame in frames.items():
            if not len(frame):
                continue
            write_parquet(frame, os.path.join(self.root, name, f"part-{part:05d}.parquet"))
            lengths = frame[self.item_list].list.len()
            self.counts[name]["sessions"] += len(frame)
            self.counts[name]["events"] += int(lengths.sum())
            low = int(lengths.min())
            self.shortest = low if self.shortest is None else min(self.shortest, low)
            self.longest = max(self.longest, int(lengths.max()))
