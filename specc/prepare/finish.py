"""The last files of DIR: the mappings, the item features, schema.pbtxt and report.json."""
from __future__ import annotations

import os
import time


from specc.prepare import categories
from specc.prepare.output import schema_columns, write_json, write_parquet
from specc.prepare.plan import Preparation, check_splits
from specc.prepare.schema_file import write_schema
from specc.prepare.sessions import StepCounts
from specc.prepare.splits_writer import SplitWriter


def finish(root: str, prep: Preparation, writer: SplitWriter, totals: StepCounts, started: float,
           engine: str, map_parts=None) -> dict:
    spec = prep.spec
    splits = writer.finish(map_parts)
    check_splits(splits)
    os.makedirs(os.path.join(root, "categories"))
    for mapping in prep.mappings.values():
        categories.write(mapping, os.path.join(root, "categories"))
    if prep.items is not None:
        _write_item_table(root, prep)
    lengths = (writer.shortest or 0, writer.longest)
    write_schema(schema_columns(spec, prep.layout, prep.source.dtypes[spec.key], prep.mappings, lengths),
                 os.path.join(root, "schema.pbtxt"))
    report = {
        "events": spec.events, "files": len(prep.source.files), "engine": engine, "seconds": round(time.perf_counter() - started, 3),
        "events_read": prep.stats.events, "n_null_item": prep.stats.null_item, "n_duplicates": totals.duplicates,
        "events_kept": totals.events, "n_null_continuous": prep.stats.null_continuous,
        "sessions": {"kept": totals.kept, "dropped_too_short": totals.too_short, "min_length": spec.min_length,
                     "max_length": spec.max_length},
        "items": prep.mappings[spec.item].cardinality - 1,
        "time_range": {"min": _iso(prep.stats.time_min), "max": _iso(prep.stats.time_max)},
        "split": {"kind": spec.split, **({"valid_fraction": spec.valid_fraction, "valid_after": _iso(writer.cutoff)}
                                        if spec.split == "time" else {})},
        "splits": _with_time_ranges(splits, writer.time_ranges()),
        "categories": {name: m.summary() for name, m in prep.mappings.items()},
        "spec": spec.model_dump(),
    }
    if prep.items is not None:
        known = prep.mappings[spec.item].values.join(prep.items.table, left_on="value", right_on=spec.item, how="semi")
        report["item_features"] = {"source": prep.items.source, "items_with_features": len(known),
                                   "items_without_features": len(prep.mappings[spec.item].values) - len(known),
                                   "vectors": prep.items.vectors}
    write_json(report, os.path.join(root, "report.json"))
    return report


def _write_item_table(root: str, prep: Preparation) -> None:
    """DIR/item_features.parquet: a row per item id that ITEMS lists (`id`, `value` = the raw item, then every
    feature), the item table that `inputs.pretrained` (kind parquet, ids "id") reads vectors from."""
    item = prep.spec.item
    table = (prep.mappings[item].values.join(prep.items.table.rename({item: "value"}), on="value", how="inner")
             .select("id", "value", *[c for c in prep.items.table.columns if c != item]).sort("id"))
    write_parquet(table, os.path.join(root, "item_features.parquet"))


def _with_time_ranges(splits: dict, ranges: dict) -> dict:
    return {name: {**counts, **({"time_range": {"min": _iso(ranges[name][0]), "max": _iso(ranges[name][1])}}
                                if name in ranges else {})} for name, counts in splits.items()}


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def describe(report: dict, out: str) -> str:
    s = report["splits"]
    return (f"prepared {report['events_read']:,} events ({report['n_null_item']:,} without an item, "
            f"{report['n_duplicates']:,} duplicates dropped) into {report['sessions']['kept']:,} sessions "
            f"({report['sessions']['dropped_too_short']:,} too short dropped) over {report['items']:,} items in "
            f"{report['seconds']:.1f} s\n  " + _zeroed(report) + ", ".join(f"{k}: {v['sessions']:,} rows"
                                                                   for k, v in s.items())
            + f"\n  wrote {out}/ (train/, valid/{', test/' if 'test' in s else ''}, schema.pbtxt, categories/, "
            "report.json)")


def _zeroed(report: dict) -> str:
    """The continuous columns' values written as 0.0 (null, NaN, inf), where there are any."""
    counts = {c: n for c, n in (report.get("n_null_continuous") or {}).items() if n}
    shown = ", ".join(f"{c!r} {n:,}" for c, n in counts.items())
    return f"continuous values null or not finite, written as 0.0: {shown}\n  " if counts else ""

