"""What both engines share: the checked source, the first pass, the mappings, and the encoding of events."""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from specc.errors import DataError
from specc.prepare import categories
from specc.prepare.items import ItemFeatures, load_item_features
from specc.prepare.sessions import Layout
from specc.prepare.source import Source, open_source
from specc.prepare.times import time_expr
from specc.prepare.spec import DERIVED, PrepareSpec
from specc.prepare.stats import TIME, Stats, collect_stats


@dataclass(frozen=True)
class Preparation:
    spec: PrepareSpec
    source: Source
    stats: Stats
    mappings: dict            # column -> categories.Mapping (the item first, then categorical, then item features)
    items: ItemFeatures | None
    layout: Layout

    @property
    def kept_events(self) -> int:
        return self.stats.events - self.stats.null_item


def plan_preparation(spec: PrepareSpec) -> Preparation:
    """Check the log, count it (one streaming pass) and fit the mappings."""
    source = open_source(spec.events, [spec.key, spec.time, spec.item, *spec.categorical, *spec.continuous],
                         spec.time, spec.continuous)
    categorical = [spec.item, *spec.categorical]
    stats = collect_stats(source, spec, categorical)
    mappings = {}
    for col in categorical:
        previous = categories.read_previous(spec.categories, col) if spec.categories else None
        if previous is not None:
            categories.check_compatible(previous, source.dtypes[col], col, spec.categories)
        mappings[col] = categories.fit(col, stats.counts[col], oov=col != spec.item,
                                       min_frequency=spec.min_frequency, previous=previous)
    items = None
    if spec.item_features:
        taken = {spec.key, spec.time, *categorical, *spec.continuous, *DERIVED, "session_index"}
        items = load_item_features(spec.item_features, spec.item, source.dtypes[spec.item], taken, spec.categories)
        mappings.update({m.column: m for m in items.mappings})
    feature_lists = (*items.categorical, *items.continuous) if items else ()
    continuous = (*spec.continuous, *(items.continuous if items else ()))
    layout = Layout(key=spec.key, item=spec.item, event_columns=(*categorical, *spec.continuous, *feature_lists),
                    dedupe_columns=(*categorical, *spec.continuous), continuous=continuous,
                    gap_us=spec.gap_seconds * 1_000_000 if spec.gap_seconds else None,
                    min_length=spec.min_length, derive=tuple(spec.derive), time=spec.time,
                    derived_lists=tuple(spec.derived_lists))
    return Preparation(spec, source, stats, mappings, items, layout)


def encode_events(frame: pl.LazyFrame, prep: Preparation) -> pl.LazyFrame:
    """Raw events (with their row index) -> events with a TIME, ids for the categorical columns and the item
    features joined in; events without an item are dropped."""
    spec = prep.spec
    frame = frame.filter(pl.col(spec.item).is_not_null()).with_columns(
        time_expr(spec.time, prep.source.dtypes[spec.time], spec.time_unit).alias(TIME))
    if spec.time not in (spec.key, spec.item):
        frame = frame.drop(spec.time)
    if prep.items is not None:
        frame = frame.join(prep.items.per_event.lazy(), on=spec.item, how="left", maintain_order="none")
        frame = frame.with_columns([pl.col(c).fill_null(categories.OOV) for c in prep.items.categorical])
    for col in [spec.item, *spec.categorical]:
        frame = categories.encode(frame, prep.mappings[col], col, "__id").drop(col).rename({"__id": col})
    return frame


def check_splits(counts: dict) -> None:
    empty = [name for name, c in counts.items() if c["sessions"] == 0]
    if empty:
        raise DataError([f"no session is left for {', '.join(empty)} (sessions per split: "
                         + ", ".join(f"{k} {v['sessions']}" for k, v in counts.items())
                         + "); give more data, a lower --min-length or another --split"])
