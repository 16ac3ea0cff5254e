"""Properties of specc data prepare on random logs: every kept event appears exactly once, in time order (ties in
log order), with its own item; nothing else appears; small buckets give the same output as one bucket."""
from __future__ import annotations

import tempfile
from datetime import datetime, timedelta

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specc.prepare import prepare

events = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["a", "b", "ç", "d", None]), st.integers(0, 8)),
                  min_size=1, max_size=40)


def expected_sessions(rows, min_length):
    """The reference: drop null items and exact duplicates (first kept), sort stably by time, group."""
    seen, kept = set(), []
    for position, (s, item, t) in enumerate(rows):
        if item is None or (s, item, t) in seen:
            continue
        seen.add((s, item, t))
        kept.append((s, t, position, item))
    sessions: dict = {}
    for s, t, _, item in sorted(kept):
        sessions.setdefault(f"s{s}", []).append(item)
    return {k: v for k, v in sessions.items() if len(v) >= min_length}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=events, min_length=st.integers(1, 3), partition_rows=st.sampled_from([1, 3, 1000]))
def test_every_kept_event_once_in_time_order(rows, min_length, partition_rows):
    expected = expected_sessions(rows, min_length)
    with tempfile.TemporaryDirectory() as tmp:
        log = pl.DataFrame({"session": [f"s{s}" for s, _, _ in rows], "item": [i for _, i, _ in rows],
                            "ts": [datetime(2024, 1, 1) + timedelta(seconds=t) for _, _, t in rows]})
        log.write_parquet(f"{tmp}/log.parquet")
        spec = {"events": f"{tmp}/log.parquet", "out": f"{tmp}/out", "item": "item", "time": "ts",
                "session": "session", "min_length": min_length, "split": "last", "partition_rows": partition_rows}
        if not expected or max(map(len, expected.values())) < 3:
            return   # no row for valid and test: an error, covered by the error tests
        prepare(spec)
        ids = dict(pl.read_parquet(f"{tmp}/out/categories/item.parquet").select("id", "value").iter_rows())
        test = pl.read_parquet(f"{tmp}/out/test/*.parquet")
        train = pl.read_parquet(f"{tmp}/out/train/*.parquet")
        got = {s: [ids[i] for i in seq] for s, seq in zip(train["session"], train["item-list"])}
        got.update({s: [ids[i] for i in seq] for s, seq in zip(test["session"], test["item-list"])})
        assert got == expected   # a held-out sequence is whole in test
