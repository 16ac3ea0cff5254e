"""The Dask engine: the same transform on a dask.distributed cluster.

The client checks and counts the log and fits the mappings (one streaming pass, as the local engine does).
Each file is then encoded on a worker, the events are hash-partitioned by their session (or user) key with
Dask's shuffle, and every partition -- all the events of its sessions -- goes through the same per-partition
step as the local engine's buckets (`sessions_of`, then the split) on its worker, which writes its part files
into DIR. Workers must see DIR and the log at the same paths (one machine, or a shared file system).
"""
from __future__ import annotations

import math
import time

import polars as pl

from specc.prepare.finish import finish
from specc.prepare.output import check_out, staging
from specc.prepare.plan import Preparation, encode_events, plan_preparation
from specc.prepare.sessions import StepCounts, sessions_of
from specc.prepare.source import FILE, scan_file
from specc.prepare.spec import PrepareSpec
from specc.prepare.split import split_last
from specc.prepare.splits_writer import SplitWriter, stage, write_splits


def prepare_dask(spec: PrepareSpec, client, progress: bool = False, log=None) -> dict:
    import dask
    import dask.dataframe as dd
    if client is None:
        raise ValueError("engine='dask' needs a dask.distributed Client")
    started = time.perf_counter()
    say = log or (lambda message: None)
    check_out(spec.out)
    prep = plan_preparation(spec)
    rows_per_file = _rows_per_file(prep)
    offsets = [sum(rows_per_file[:i]) for i in range(len(rows_per_file))]
    n_parts = max(len(client.scheduler_info()["workers"]), math.ceil(prep.kept_events / spec.partition_rows))
    with staging(spec.out) as root:
        say(f"{prep.stats.events:,} events; encoding {len(prep.source.files)} file(s) on the workers and "
            f"shuffling them into {n_parts} partition(s) by {spec.key!r}")
        meta = _encoded(prep.source.files[0], 0, prep, empty=True)
        frames = [dask.delayed(_encoded)(f, o, prep) for f, o in zip(prep.source.files, offsets)]
        events = dd.from_delayed(frames, meta=meta).shuffle(on=spec.key, npartitions=n_parts)
        tasks = [dask.delayed(_partition_step)(part, i, prep, root) for i, part in enumerate(events.to_delayed())]
        results = client.gather(client.compute(tasks))
        writer = SplitWriter(root, spec.split, f"{spec.item}-list", spec.max_length, spec.valid_fraction)
        totals = StepCounts()
        for counts, written in results:
            totals.add(counts)
            if spec.split == "last":
                writer.merge(written)
            elif written is not None:
                writer.add_staged(*written)
        say("splitting and writing the parts on the workers")
        return finish(root, prep, writer, totals, started, "dask",
                      map_parts=lambda fn, *args: client.gather(client.map(fn, *args, pure=False)))


def _rows_per_file(prep: Preparation) -> list[int]:
    """Events per file (from the first pass), in file order: the offsets of the global row index."""
    counts = dict(zip(prep.stats.per_file[FILE], prep.stats.per_file["rows"]))
    return [int(counts.get(f, 0)) for f in prep.source.files]


def _encoded(path: str, offset: int, prep: Preparation, empty: bool = False):
    """One file's encoded events as a pandas frame (what Dask shuffles)."""
    spec = prep.spec
    columns = list(dict.fromkeys([spec.key, spec.time, spec.item, *spec.categorical, *spec.continuous]))
    frame = scan_file(path, False).select(columns).with_row_index("__row", offset=offset)
    frame = encode_events(frame.with_columns(pl.col("__row").cast(pl.Int64)), prep)
    return (frame.head(0) if empty else frame).collect().to_pandas()


def _partition_step(part, index: int, prep: Preparation, root: str):
    """The per-partition step on a worker: session rows, then the split's files (or staged rows)."""
    rows, counts = sessions_of(pl.from_pandas(part), prep.layout)
    if not len(rows):
        return counts, {} if prep.spec.split == "last" else None
    if prep.spec.split == "last":
        frames = split_last(rows, prep.spec.max_length)
        return counts, write_splits(root, frames, index, f"{prep.spec.item}-list")
    return counts, stage(root, rows, index)
