"""Session rows, part by part, into DIR/train, DIR/valid (and DIR/test) with their counts.

A leave-one-out split needs nothing global and is written as each part comes; a time split first stages the
parts' sessions and their start times, finds the one cut instant over all of them, then splits each staged part.
The functions here run wherever the part is (a Dask worker too); `SplitWriter` adds their counts up.
"""
from __future__ import annotations

import os

import polars as pl

from specc.prepare.output import write_parquet
from specc.prepare.sessions import END, START
from specc.prepare.split import split_last, split_time, time_cutoff


def write_splits(root: str, frames: dict, part: int, item_list: str) -> dict:
    """Write each non-empty split frame as DIR/<split>/part-N.parquet; their counts and row lengths."""
    counts = {}
    for name, frame in frames.items():
        if not len(frame):
            continue
        first, last = frame[START].min(), frame[END].max()
        frame = frame.drop(START, END)
        write_parquet(frame, os.path.join(root, name, f"part-{part:05d}.parquet"))
        lengths = frame[item_list].list.len()
        counts[name] = {"sessions": len(frame), "events": int(lengths.sum()), "shortest": int(lengths.min()),
                        "longest": int(lengths.max()), "first": first, "last": last}
    return counts


def stage(root: str, rows: pl.DataFrame, part: int) -> tuple[str, pl.Series]:
    """Keep a part's session rows until the time cut is known; its path and start times."""
    path = os.path.join(root, "_work", "sessions", f"part-{part:05d}.arrow")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows.write_ipc(path, compression="lz4")   # read back once: Arrow IPC is cheaper than parquet
    return path, rows[START]


def split_staged(root: str, path: str, part: int, cutoff, max_length: int | None, item_list: str) -> dict:
    counts = write_splits(root, split_time(pl.read_ipc(path), cutoff, max_length), part, item_list)
    os.remove(path)
    return counts


class SplitWriter:
    def __init__(self, root: str, kind: str, item_list: str, max_length: int | None, valid_fraction: float):
        self.root, self.kind, self.item_list = root, kind, item_list
        self.max_length, self.valid_fraction = max_length, valid_fraction
        names = ("train", "valid", "test") if kind == "last" else ("train", "valid")
        self.counts = {name: {"sessions": 0, "events": 0} for name in names}
        self._times: dict[str, list] = {}   # split -> [first, last] event time of the sessions its rows come from
        self.shortest, self.longest = None, 0
        self.cutoff = None
        self.parts = 0
        self._staged: list[tuple[str, pl.Series]] = []

    def add(self, rows: pl.DataFrame) -> None:
        """One part's session rows (as `sessions_of` returns them)."""
        if self.kind == "last":
            self.merge(write_splits(self.root, split_last(rows, self.max_length), self.parts, self.item_list))
        else:
            self._staged.append(stage(self.root, rows, self.parts))
        self.parts += 1

    def add_staged(self, path: str, starts: pl.Series) -> None:
        self._staged.append((path, starts))

    def merge(self, counts: dict) -> None:
        for name, c in counts.items():
            self.counts[name]["sessions"] += c["sessions"]
            self.counts[name]["events"] += c["events"]
            self.shortest = c["shortest"] if self.shortest is None else min(self.shortest, c["shortest"])
            self.longest = max(self.longest, c["longest"])
            was = self._times.setdefault(name, [c["first"], c["last"]])
            was[:] = [min(was[0], c["first"]), max(was[1], c["last"])]

    def finish(self, map_parts=None) -> dict:
        """Split the staged parts at the time cut (through `map_parts(function, *iterables)`, e.g. a Dask
        client's map and gather, where given) and return the counts per split."""
        if self.kind == "time":
            self.cutoff = time_cutoff(pl.concat([starts for _, starts in self._staged]), self.valid_fraction)
            paths = [path for path, _ in self._staged]
            n = len(paths)
            args = ([self.root] * n, paths, range(n), [self.cutoff] * n, [self.max_length] * n, [self.item_list] * n)
            for counts in (map_parts or map)(split_staged, *args):
                self.merge(counts)
        return self.counts

    def time_ranges(self) -> dict[str, list]:
        """Per split, the first and last event time of the sessions its rows come from (before --max-length)."""
        return dict(self._times)
