"""specc data prepare on small hand-made logs: exact outputs for both session modes, both splits, nulls,
duplicates, unicode ids, reused mappings, item features and the schema."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import polars as pl
import pytest

from specc.cli import main
from specc.prepare import prepare
from tests.helpers import train_on_prepared

T0 = datetime(2024, 3, 4, 9, 0)   # a Monday


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# session, item, minutes after T0, category, price
LOG = [
    ("s1", "a", 0, "x", 1.0),
    ("s1", "b", 2, "y", 2.0),
    ("s1", "b", 2, "y", 2.0),        # an exact duplicate
    ("s1", "c", 1, "x", None),       # out of time order in the file; null price
    ("s2", "a", 60, None, 3.0),      # null category
    ("s2", None, 61, "x", 3.0),      # null item: dropped
    ("s2", "ü日", 62, "x", 4.0),      # unicode id
    ("s3", "a", 120, "x", 5.0),      # a session of one event: too short
    ("s4", "c", 180, "x", 6.0),
    ("s4", "a", 180, "x", 7.0),      # same time as the event before: file order kept
    ("s5", "a", 240, "y", 8.0),
    ("s5", "b", 245, "y", 9.0),
]


def write_log(path, rows=LOG, fmt="parquet"):
    frame = pl.DataFrame([(s, i, at(m), c, p) for s, i, m, c, p in rows],
                         schema=["session", "item", "ts", "category", "price"], orient="row")
    (frame.write_parquet if fmt == "parquet" else frame.write_csv)(str(path))
    return str(path)


def read(out, split):
    return pl.read_parquet(f"{out}/{split}/*.parquet").sort(pl.first())


def mapping(out, column):
    return dict(pl.read_parquet(f"{out}/categories/{column}.parquet").select("value", "id").iter_rows())


@pytest.fixture
def log(tmp_path):
    return write_log(tmp_path / "log.parquet")


def test_session_mode_time_split_golden(tmp_path, log):
    out = str(tmp_path / "out")
    report = prepare({"events": log, "out": out, "item": "item", "time": "ts", "session": "session",
                      "categorical": ["category"], "continuous": ["price"], "valid_fraction": 0.25,
                      "derive": ["weekday", "hour", "time_since_prev"]})
    items = mapping(out, "item")
    assert items == {"a": 1, "b": 2, "c": 3, "ü日": 4}          # by frequency, ties by value
    cats = mapping(out, "category")
    assert cats == {None: 1, "x": 2, "y": 3}                     # 1 is null / rare / unknown
    train, valid = read(out, "train"), read(out, "valid")
    assert train["session"].to_list() == ["s1", "s2", "s4"] and valid["session"].to_list() == ["s5"]
    assert train["item-list"].to_list() == [[1, 3, 2], [1, 4], [3, 1]]
    assert train["category-list"].to_list() == [[2, 2, 3], [1, 2], [2, 2]]
    assert train["price-list"].to_list() == [[1.0, 0.0, 2.0], [3.0, 4.0], [6.0, 7.0]]
    assert train["time_since_prev-list"].to_list() == [[0.0, 60.0, 60.0], [0.0, 120.0], [0.0, 0.0]]
    assert train["weekday"].to_list() == [1, 1, 1] and train["hour"].to_list() == [10, 11, 13]
    assert valid["item-list"].to_list() == [[1, 2]]
    assert (report["events_read"], report["n_null_item"], report["n_duplicates"]) == (12, 1, 1)
    assert report["n_null_continuous"] == {"price": 1}
    assert report["sessions"]["kept"] == 4 and report["sessions"]["dropped_too_short"] == 1
    assert report["items"] == 4 and report["events_kept"] == 9
    span = lambda a, b: {"min": at(a).isoformat(), "max": at(b).isoformat()}  # noqa: E731
    assert report["splits"] == {"train": {"sessions": 3, "events": 7, "time_range": span(0, 180)},
                                "valid": {"sessions": 1, "events": 2, "time_range": span(240, 245)}}
    assert report["split"]["valid_after"] == at(180).isoformat()
    assert report["time_range"] == {"min": at(0).isoformat(), "max": at(245).isoformat()}
    assert json.load(open(f"{out}/report.json"))["n_duplicates"] == 1


INF = float("inf")
# NaN, +-inf and a float64 beyond float32's range (inf once cast) are written as 0.0, like the null
NON_FINITE_LOG = [("s1", "a", 0, "x", INF), ("s1", "b", 1, "x", -INF), ("s1", "c", 2, "x", float("nan")),
                  ("s2", "a", 60, "x", 1e300), ("s2", "b", 61, "x", None), ("s2", "c", 62, "x", 2.5)]


def test_non_finite_continuous_values_become_zero_and_are_counted(tmp_path):
    out = str(tmp_path / "out")
    report = prepare({"events": write_log(tmp_path / "log.parquet", NON_FINITE_LOG), "out": out, "item": "item",
                      "time": "ts", "session": "session", "continuous": ["price"], "valid_fraction": 0.5})
    assert read(out, "train")["price-list"].to_list() == [[0.0, 0.0, 0.0]]
    assert read(out, "valid")["price-list"].to_list() == [[0.0, 0.0, 2.5]]
    assert report["n_null_continuous"] == {"price": 5}
    from specc.prepare.finish import describe
    assert "continuous values null or not finite, written as 0.0: 'price' 5" in describe(report, out)


def test_prepared_non_finite_continuous_values_train(tmp_path):
    prices = [INF, -INF, float("nan"), 1.5]
    rows = [(f"s{s}", f"i{(s + j) % 5}", prices[j], at(60 * s + j)) for s in range(12) for j in range(4)]
    # the helper asserts that `specc train` exits 0: its data check refuses NaN and inf
    train_on_prepared(tmp_path, rows, ["session_id", "item_id", "price", "ts"], continuous=["price"])


def test_user_mode_with_session_gap_and_last_split(tmp_path):
    rows = [("u1", "a", 0, "x", 1.0), ("u1", "b", 10, "x", 1.0), ("u1", "c", 20, "x", 1.0),   # session 0
            ("u1", "d", 120, "x", 1.0), ("u1", "a", 125, "x", 1.0),                           # gap > 30m: 1
            ("u2", "a", 0, "x", 1.0), ("u2", "b", 1, "x", 1.0)]
    log = write_log(tmp_path / "log.csv", rows, fmt="csv")
    out = str(tmp_path / "out")
    report = prepare({"events": log, "out": out, "item": "item", "time": "ts", "user": "session",
                      "session_gap": "30m", "split": "last", "derive": ["weekday", "hour", "time_since_prev"]})
    ids = mapping(out, "item")
    train, valid, test = read(out, "train"), read(out, "valid"), read(out, "test")
    decode = {v: k for k, v in ids.items()}
    as_raw = lambda frame: [[decode[i] for i in row] for row in frame.sort("session", "session_index")["item-list"]]  # noqa: E731
    assert train.sort("session", "session_index")["session_index"].to_list() == [0, 1, 0]
    assert as_raw(train) == [["a"], ["d", "a"], ["a", "b"]]       # the 3-item session gave 1 to train
    assert as_raw(valid) == [["a", "b"]] and as_raw(test) == [["a", "b", "c"]]
    by_session = train.sort("session", "session_index")
    assert by_session["time_since_prev-list"].to_list() == [[0.0], [0.0, 300.0], [0.0, 60.0]]   # a gap restarts it
    assert by_session["hour"].to_list() == [10, 12, 10] and by_session["weekday"].to_list() == [1, 1, 1]
    assert test["time_since_prev-list"].to_list() == [[0.0, 600.0, 600.0]]
    assert {k: v for k, v in report["splits"]["test"].items() if k != "time_range"} == {"sessions": 1, "events": 3}
    # the sessions each split's rows come from: valid and test rows are u1's first session, train rows all three
    held = report["splits"]["test"]["time_range"]
    assert report["splits"]["valid"]["time_range"] == held
    assert held["min"] == report["time_range"]["min"] and held["max"] < report["time_range"]["max"]
    assert report["splits"]["train"]["time_range"] == report["time_range"]


T0_SECONDS = 1_709_542_800   # T0 as seconds since the Unix epoch (a naive time is UTC)


def test_derive_timestamp_lists_epoch_seconds_aligned_with_the_items(tmp_path, log):
    out = str(tmp_path / "out")
    prepare({"events": log, "out": out, "item": "item", "time": "ts", "session": "session", "valid_fraction": 0.25,
             "max_length": 2, "derive": ["timestamp"]})
    seconds = lambda *minutes: [T0_SECONDS + 60 * m for m in minutes]  # noqa: E731
    train, valid = read(out, "train"), read(out, "valid")
    assert train["item-list"].to_list() == [[3, 2], [1, 4], [3, 1]]     # the 2 most recent items, in time order
    assert train["ts-list"].to_list() == [seconds(1, 2), seconds(60, 62), seconds(180, 180)]
    assert valid["ts-list"].to_list() == [seconds(240, 245)] and train["ts-list"].dtype == pl.List(pl.Int64)
    from specc import load_schema
    column = load_schema(f"{out}/schema.pbtxt")["ts-list"]
    assert (column.dtype, column.is_list, column.tags, column.value_count) == ("int", True, {"time", "list"}, (2, 2))


TIMES = {   # 2024-03-04 09:00:00, 09:01:30.750 and 09:02:00 UTC, as a log may store them
    "ISO text": (pl.Series(["2024-03-04T09:00:00", "2024-03-04T09:01:30.750", "2024-03-04T09:02:00"]), "s"),
    "zoned datetime": (pl.Series([datetime(2024, 3, 4, 10, 0), datetime(2024, 3, 4, 10, 1, 30, 750_000),
                                  datetime(2024, 3, 4, 10, 2)]).dt.replace_time_zone("Europe/Berlin"), "s"),
    "epoch milliseconds": (pl.Series([T0_SECONDS * 1000, T0_SECONDS * 1000 + 90_750, T0_SECONDS * 1000 + 120_000]),
                           "ms"),
}


@pytest.mark.parametrize("stored", TIMES)
def test_derive_timestamp_is_whole_utc_seconds_however_the_time_is_stored(tmp_path, stored):
    times, unit = TIMES[stored]
    pl.DataFrame({"session": ["s1"] * 3, "item": ["a", "b", "c"], "ts": times}).write_parquet(tmp_path / "log.parquet")
    out = str(tmp_path / "out")
    prepare({"events": str(tmp_path / "log.parquet"), "out": out, "item": "item", "time": "ts", "session": "session",
             "time_unit": unit, "split": "last", "derive": ["timestamp"]})
    assert read(out, "test")["ts-list"].to_list() == [[T0_SECONDS, T0_SECONDS + 90, T0_SECONDS + 120]]


def test_user_mode_one_sequence_per_user_and_max_length(tmp_path, log):
    out = str(tmp_path / "out")
    report = prepare({"events": log, "out": out, "item": "item", "time": "ts", "user": "session", "split": "last",
                      "max_length": 2})
    test = read(out, "test")
    assert test["session"].to_list() == ["s1"]                  # the only user with >= 3 events
    assert test["item-list"].to_list() == [[3, 2]]              # the most recent 2 of a, c, b
    assert read(out, "valid")["item-list"].to_list() == [[1, 3]]
    assert "session_index" not in test.columns
    assert not any(c.startswith("__") for c in test.columns)
    # the range of the session the row comes from, before --max-length keeps its 2 latest items (c, b)
    assert report["splits"]["test"]["time_range"] == {"min": at(0).isoformat(), "max": at(2).isoformat()}


def test_categories_reused_across_batches(tmp_path, log):
    first, second = str(tmp_path / "day1"), str(tmp_path / "day2")
    prepare({"events": log, "out": first, "item": "item", "time": "ts", "session": "session",
             "categorical": ["category"]})
    day2 = write_log(tmp_path / "day2.parquet", [("t1", "new", 0, "w", 1.0), ("t1", "new", 1, "x", 1.0),
                                                 ("t1", "a", 2, "x", 1.0), ("t2", "zz", 3, "x", 1.0),
                                                 ("t2", "c", 4, "x", 1.0), ("t3", "a", 9, "x", 1.0),
                                                 ("t3", "b", 9, "x", 1.0)])
    report = prepare({"events": day2, "out": second, "item": "item", "time": "ts", "session": "session",
                      "categorical": ["category"], "categories": first, "valid_fraction": 0.3})
    assert mapping(second, "category") == {None: 1, "x": 2, "y": 3, "w": 4}   # y unseen today, kept
    assert report["categories"]["category"]["new_values"] == 1
    assert read(second, "train").filter(pl.col("session") == "t1")["category-list"].to_list() == [[4, 2, 2]]
    old, new = mapping(first, "item"), mapping(second, "item")
    assert all(new[v] == i for v, i in old.items())             # known ids unchanged
    assert new["new"] == 5 and new["zz"] == 6                   # appended, by frequency
    assert report["categories"]["item"]["new_values"] == 2 and report["categories"]["item"]["reused"]


def test_item_features_joined_by_raw_item(tmp_path, log):
    items = tmp_path / "items.parquet"
    pl.DataFrame({"item": ["a", "b", "c"], "brand": ["p", "q", "p"], "weight": [0.5, 1.5, None],
                  "vec": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]}).write_parquet(items)
    out = str(tmp_path / "out")
    report = prepare({"events": log, "out": out, "item": "item", "time": "ts", "session": "session",
                      "item_features": str(items)})
    train = read(out, "train")
    brands = mapping(out, "brand")
    assert brands == {None: 1, "p": 2, "q": 3}
    row = train.filter(pl.col("session") == "s2")                # items a, ü日 (ü日 has no features)
    assert row["brand-list"].to_list() == [[2, 1]] and row["weight-list"].to_list() == [[0.5, 0.0]]
    table = pl.read_parquet(f"{out}/item_features.parquet")
    assert table["id"].to_list() == [1, 2, 3]                   # ü日 (id 4) has no row
    assert table["vec"].to_list() == [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    assert report["item_features"]["items_without_features"] == 1 and report["item_features"]["vectors"] == {"vec": 2}


def test_schema_reads_in_specc_and_merlin(tmp_path, log):
    out = str(tmp_path / "out")
    prepare({"events": log, "out": out, "item": "item", "time": "ts", "session": "session",
             "categorical": ["category"], "continuous": ["price"], "derive": ["weekday"]})
    from specc import load_schema
    schema = load_schema(f"{out}/schema.pbtxt")
    item = schema["item-list"]
    assert item.is_item_id and item.is_categorical and item.is_list and item.cardinality == 5
    assert schema["category-list"].cardinality == 4 and schema["price-list"].is_continuous
    assert schema["weekday"].cardinality == 8 and schema["session"].dtype == "string"
    from merlin.schema import Tags
    from merlin.schema.io.tensorflow_metadata import TensorflowMetadata
    merlin = TensorflowMetadata.from_proto_text_file(out, "schema.pbtxt").to_merlin_schema()
    assert merlin.select_by_tag(Tags.ITEM_ID).column_names == ["item-list"]
    assert merlin["item-list"].int_domain.max == 4 and merlin["item-list"].is_list


def test_write_schema_is_public(tmp_path):
    import specc
    path = specc.write_schema([{"name": "item_id-list", "tags": ["item_id", "categorical", "list"], "dtype": "int",
                                "is_list": True, "cardinality": 11}], tmp_path)
    assert specc.load_schema(path)["item_id-list"].cardinality == 11


def test_cli_exact_form_and_spec_file(tmp_path, log, capsys):
    out = tmp_path / "cli"
    code = main(["data", "prepare", log, "--out", str(out), "--item", "item", "--time", "ts", "--session", "session",
                 "--categorical", "category", "--continuous", "price", "--min-length", "2", "--split", "time",
                 "--valid-fraction", "0.25", "--quiet"])
    assert code == 0 and "4 sessions" in capsys.readouterr().out
    spec = tmp_path / "prep.json"
    spec.write_text(json.dumps({"events": "log.parquet", "out": "from_spec", "item": "item", "time": "ts",
                                "session": "session", "categorical": ["category"], "continuous": ["price"],
                                "valid_fraction": 0.25}))
    assert main(["data", "prepare", "--spec", str(spec), "--quiet"]) == 0
    for split in ("train", "valid"):
        assert read(out, split).equals(read(tmp_path / "from_spec", split))


def test_item_features_in_the_schema_as_merlin_reads_it(tmp_path, log):
    items = tmp_path / "items.parquet"
    pl.DataFrame({"item": ["a", "b", "c"], "brand": ["p", "q", "p"], "weight": [0.5, 1.5, None],
                  "vec": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]}).write_parquet(items)
    out = tmp_path / "out"
    prepare({"events": log, "out": str(out), "item": "item", "time": "ts", "session": "session",
             "item_features": str(items)})
    from specc import load_schema
    schema = load_schema(out / "schema.pbtxt")
    assert schema["brand-list"].is_categorical and schema["brand-list"].cardinality == 4   # pad, null, p, q
    assert schema["weight-list"].is_continuous and schema["weight-list"].is_list
    assert "vec-list" not in schema                  # vectors live in item_features.parquet
    from merlin.schema import Tags
    from merlin.schema.io.tensorflow_metadata import TensorflowMetadata
    merlin = TensorflowMetadata.from_proto_text_file(str(out), "schema.pbtxt").to_merlin_schema()
    assert set(merlin.select_by_tag(Tags.ITEM).column_names) >= {"brand-list", "weight-list"}
    assert merlin["brand-list"].int_domain.max == 3 and Tags.CATEGORICAL in merlin["brand-list"].tags
    assert Tags.CONTINUOUS in merlin["weight-list"].tags


def test_item_vectors_feed_a_pretrained_input_through_train_and_recommend(tmp_path, log):
    items = tmp_path / "items.parquet"
    pl.DataFrame({"item": ["a", "b", "c"], "vec": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]}).write_parquet(items)
    out = tmp_path / "out"
    prepare({"events": log, "out": str(out), "item": "item", "time": "ts", "session": "session",
             "item_features": str(items)})
    import specc
    vectors = {"kind": "parquet", "path": "out/item_features.parquet", "ids": "id", "vectors": "vec", "dim": 2}
    spec = {"specc": 1, "inputs": {"max_sequence_length": 4, "features": ["item-list"],
                                   "embeddings": {"default_dim": 4}, "pretrained": {"vec": vectors}},
            "masking": {"kind": "causal"}, "body": {"kind": "gru", "d_model": 4},
            "tasks": [{"kind": "next_item"}], "training": {"batch_size": 2, "epochs": 1, "seed": 1}}
    (tmp_path / "uncovered.json").write_text(json.dumps(spec))
    schema = specc.load_schema(out / "schema.pbtxt")
    with pytest.raises(specc.SpecError) as error:                # ü日 (id 4) has no row in item_features.parquet
        specc.compile(tmp_path / "uncovered.json", schema)
    assert [i.code for i in error.value.issues] == ["incomplete_coverage"]
    vectors["missing"] = "zero"
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main(["train", str(tmp_path / "spec.json"), "--data", str(out / "train"), "--out", str(tmp_path / "run"),
                 "--quiet"]) == 0
    assert main(["recommend", str(tmp_path / "run"), "--data", str(out / "valid"), "--k", "2",
                 "--out", str(tmp_path / "recs.jsonl")]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "recs.jsonl").read_text().splitlines()]
    assert len(row["item_ids"]) == 2 and set(row["item_ids"]) <= {"a", "b", "c", "ü日"}   # raw ids out
