"""The local engine: polars, streaming, in bounded memory.

Pass 1 counts the log (streaming). Pass 2 encodes every event and writes it, hash-partitioned by its session
(or user) key, into buckets of about `partition_rows` events (streaming). Each bucket then holds every event of
its sessions and is turned into session rows on its own, so memory is bounded by one bucket, not by the log.
"""
from __future__ import annotations

import glob
import math
import os
import shutil
import sys
import time

import polars as pl

from specc.prepare.finish import finish
from specc.prepare.output import check_out, staging
from specc.prepare.plan import encode_events, plan_preparation
from specc.prepare.sessions import StepCounts, sessions_of
from specc.prepare.source import polars_problem
from specc.prepare.spec import PrepareSpec
from specc.prepare.splits_writer import SplitWriter

BUCKET = "__bucket"


def prepare_local(spec: PrepareSpec, progress: bool = False, log=None) -> dict:
    started = time.perf_counter()
    say = log or (lambda message: None)
    check_out(spec.out)
    say(f"checking {len(spec.events)} input path(s) and counting the log (pass 1 of 3)")
    prep = plan_preparation(spec)
    n_buckets = max(1, math.ceil(prep.kept_events / spec.partition_rows))
    with staging(spec.out) as root:
        buckets = os.path.join(root, "_work", "buckets")
        say(f"{prep.stats.events:,} events in {len(prep.source.files)} file(s); encoding and partitioning them into "
            f"{n_buckets} bucket(s) by {spec.key!r} (pass 2 of 3)")
        columns = [spec.key, spec.time, spec.item, *spec.categorical, *spec.continuous]
        frame = encode_events(prep.source.scan(list(dict.fromkeys(columns))), prep)
        frame = frame.with_columns((pl.col(spec.key).hash(seed=7) % n_buckets).cast(pl.UInt32).alias(BUCKET))
        try:
            frame.sink_parquet(pl.PartitionBy(buckets, key=BUCKET, include_key=False), mkdir=True, engine="streaming")
        except pl.exceptions.PolarsError as exc:
            raise polars_problem(exc, prep.source.source) from None
        writer = SplitWriter(root, spec.split, f"{spec.item}-list", spec.max_length, spec.valid_fraction)
        totals = StepCounts()
        for folder in _progress(sorted(os.listdir(buckets)), progress, "sessions (pass 3 of 3)"):
            events = pl.read_parquet(glob.glob(os.path.join(buckets, folder, "*.parquet")))
            rows, counts = sessions_of(events, prep.layout)
            totals.add(counts)
            writer.add(rows)
            shutil.rmtree(os.path.join(buckets, folder))
        return finish(root, prep, writer, totals, started, "polars")


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, unit="bucket", file=sys.stderr, leave=False, dynamic_ncols=True)
