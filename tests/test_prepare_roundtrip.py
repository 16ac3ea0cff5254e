"""Raw ids in, raw ids out: prepare a log of string ids, train on it, recommend raw item values."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import polars as pl
import pytest

from specc.cli import main
from specc.errors import DataError
from specc.mappings import Mapping
from tests.helpers import train_on_prepared

ITEMS = [f"sku-{i}-ñ" for i in range(12)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("roundtrip")
    rows = [(f"s{s}", ITEMS[(s + j) % 12], datetime(2024, 1, 1) + timedelta(hours=s, minutes=j))
            for s in range(60) for j in range(4)]
    return train_on_prepared(tmp, rows, ["session_id", "item_id", "ts"])


def test_run_records_the_mappings(run):
    assert (run / "run" / "categories" / "item_id.parquet").is_file()


def test_recommend_writes_raw_item_values_by_default(run):
    raw, internal = run / "raw.jsonl", run / "internal.jsonl"
    assert main(["recommend", str(run / "run"), "--data", str(run / "data" / "valid"), "--k", "3",
                 "--out", str(raw)]) == 0
    assert main(["recommend", str(run / "run"), "--data", str(run / "data" / "valid"), "--k", "3",
                 "--ids", "internal", "--out", str(internal)]) == 0
    ids = dict(pl.read_parquet(run / "data" / "categories" / "item_id.parquet").iter_rows())
    raw_rows = [json.loads(line) for line in raw.read_text().splitlines()]
    internal_rows = [json.loads(line) for line in internal.read_text().splitlines()]
    assert raw_rows and all(isinstance(v, str) for r in raw_rows for v in r["item_ids"])
    assert [[ids[i] for i in r["item_ids"]] for r in internal_rows] == [r["item_ids"] for r in raw_rows]


def test_raw_ids_without_mappings_is_a_clear_error(run, tmp_path, capsys):
    import shutil
    bare = tmp_path / "bare"
    shutil.copytree(run / "run", bare)
    shutil.rmtree(bare / "categories")
    code = main(["recommend", str(bare), "--data", str(run / "data" / "valid"), "--ids", "raw"])
    assert code == 1 and "--ids internal" in capsys.readouterr().err


def test_unknown_raw_ids_are_named_per_row(run):
    ids = dict(pl.read_parquet(run / "data" / "categories" / "item_id.parquet").select("value", "id").iter_rows())
    items = Mapping.load(run / "run", "item_id-list")
    assert items.encode([[ITEMS[0], ITEMS[3]]]) == [[ids[ITEMS[0]], ids[ITEMS[3]]]]
    with pytest.raises(DataError, match=r"row 1: 'nope'"):
        items.encode([[ITEMS[0]], ["nope"]])


def test_other_columns_map_unknown_values_to_the_oov_id(tmp_path):
    folder = tmp_path / "categories"
    folder.mkdir()
    pl.DataFrame({"id": [1, 2, 3], "value": [None, "x", "y"]}).write_parquet(folder / "brand.parquet")
    brand = Mapping.load(tmp_path, "brand-list")
    assert brand.oov and brand.encode([["y", "never seen"]]) == [[3, 1]]
    assert brand.decode([[2, 3]]) == [["x", "y"]]


def test_training_takes_the_prepared_datas_schema_over_the_one_the_spec_names(tmp_path, capsys):
    """The quickstart for one's own data: a shipped spec (naming its example schema of 1,000 items) trained on
    prepared data of 6 items binds to DIR/schema.pbtxt, says so, and recommends raw ids of the data."""
    import shutil

    from specc import example_specs
    start = datetime(2024, 1, 1)
    rows = [(f"s{s}", f"sku-{(s + i) % 6}", start + timedelta(minutes=10 * s + i)) for s in range(40) for i in range(4)]
    train_on_prepared(tmp_path, rows, ["session_id", "item_id", "ts"], evaluate=False)
    shipped = example_specs.path("sasrec")
    spec = json.loads(shipped.read_text())
    spec["schema"] = str(shipped.parent / spec["schema"])
    spec["training"] = {"epochs": 1, "batch_size": 16}
    (tmp_path / "shipped.json").write_text(json.dumps(spec))
    capsys.readouterr()
    assert main(["train", str(tmp_path / "shipped.json"), "--data", str(tmp_path / "data" / "train"),
                 "--out", str(tmp_path / "shipped-run"), "--quiet"]) == 0
    said = capsys.readouterr().err
    assert f"schema: {tmp_path / 'data' / 'schema.pbtxt'}, the data's own" in said
    plan = json.loads((tmp_path / "shipped-run" / "plan.json").read_text())
    assert plan["schema_source"] == str(tmp_path / "data" / "schema.pbtxt")
    assert main(["recommend", str(tmp_path / "shipped-run"), "--data", str(tmp_path / "data" / "valid"),
                 "--k", "6", "--out", str(tmp_path / "recs.jsonl")]) == 0
    recommended = {i for line in open(tmp_path / "recs.jsonl") for i in json.loads(line)["item_ids"]}
    assert recommended <= {f"sku-{i}" for i in range(6)}
    shutil.rmtree(tmp_path / "shipped-run")
