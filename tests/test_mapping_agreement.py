"""Data prepared apart from a run's data are refused where their ids mean other items, accepted where they were
prepared with the run's mappings (`--categories`)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import polars as pl
import pytest

from specc.cli import main
from tests.helpers import train_on_prepared

START = datetime(2024, 1, 1)


def _log(items: list[str], sessions: int) -> list[tuple]:
    # the first items are the most frequent, so a preparation of its own gives them the lowest ids
    return [(f"s{s}", items[(s + i) % (len(items) - 1 if i else len(items))], START + timedelta(minutes=10 * s + i))
            for s in range(sessions) for i in range(4)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_on_prepared(tmp_path_factory.mktemp("agreement"), _log([f"sku-{i}" for i in range(6)], 40),
                             ["session_id", "item_id", "ts"])


def _prepare(tmp, name: str, items: list[str], *extra: str):
    pl.DataFrame(_log(items, 30), schema=["session_id", "item_id", "ts"], orient="row").write_csv(tmp / f"{name}.csv")
    assert main(["data", "prepare", str(tmp / f"{name}.csv"), "--out", str(tmp / name), "--item", "item_id",
                 "--time", "ts", "--session", "session_id", "--quiet", *extra]) == 0
    return tmp / name


@pytest.mark.parametrize("command", [["evaluate"], ["recommend", "--k", "2"], ["score", "--items", "sku-1"]])
def test_data_prepared_with_other_mappings_is_refused_by_every_reader(run, tmp_path, capsys, command):
    fresh = _prepare(tmp_path, "fresh", [f"sku-{i}" for i in reversed(range(6))])
    out = ["--out", str(tmp_path / "out.jsonl")] if command[0] != "evaluate" else []
    assert main([command[0], str(run / "run"), "--data", str(fresh / "valid"), *command[1:], *out]) == 1
    err = capsys.readouterr().err
    assert "other id mappings" in err and "'item_id'" in err and "id 1 is 'sku-1' in the data, 'sku-0' in the run" \
        in err.replace('"', "'")
    assert f"--categories {run / 'run' / 'categories'}" in err
    assert not (tmp_path / "out.jsonl").exists()
    # prepared with the run's mappings, the same log is read
    reused = _prepare(tmp_path, "reused", [f"sku-{i}" for i in reversed(range(6))], "--categories",
                      str(run / "run" / "categories"))
    assert main([command[0], str(run / "run"), "--data", str(reused / "valid"), *command[1:], *out]) == 0


def test_training_refuses_validation_data_and_a_warm_start_of_other_mappings(run, tmp_path, capsys):
    fresh = _prepare(tmp_path, "fresh", [f"sku-{i}" for i in reversed(range(6))])
    spec = str(run / "spec.json")
    assert main(["train", spec, "--data", str(run / "data" / "train"), "--eval", str(fresh / "valid"),
                 "--out", str(tmp_path / "a"), "--quiet"]) == 1
    assert "other id mappings than the training data" in capsys.readouterr().err
    assert main(["train", spec, "--data", str(fresh / "train"), "--out", str(tmp_path / "b"), "--quiet",
                 "--init-from", str(run / "run")]) == 1
    assert "other id mappings than the run" in capsys.readouterr().err
    grown = _prepare(tmp_path, "grown", [f"sku-{i}" for i in range(8)], "--categories", str(run / "data"))
    spec_dict = json.loads((run / "spec.json").read_text())
    (tmp_path / "spec.json").write_text(json.dumps(spec_dict))
    assert main(["train", str(tmp_path / "spec.json"), "--data", str(grown / "train"), "--out", str(tmp_path / "c"),
                 "--quiet", "--init-from", str(run / "run")]) == 0


@pytest.mark.parametrize("command", [["train", "SPEC", "--out", "OUT", "--quiet"], ["evaluate", "RUN"],
                                     ["recommend", "RUN"]])
def test_a_prepared_folder_instead_of_one_of_its_splits_says_which_to_pass(run, tmp_path, capsys, command):
    args = [{"SPEC": str(run / "spec.json"), "OUT": str(tmp_path / "out"), "RUN": str(run / "run")}.get(a, a)
            for a in command]
    assert main([args[0], *args[1:2], "--data", str(run / "data"), *args[2:]]) == 1
    err = capsys.readouterr().err
    assert "is a prepared data folder" in err and str(run / "data" / "train") in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_mappings_of_other_arrow_types_compare_by_value(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from specc.mapping_agreement import require_same_ids
    from specc.errors import DataError
    for side, kind in (("run", pa.string()), ("data", pa.large_string())):
        (tmp_path / side / "categories").mkdir(parents=True)
        pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "value": pa.array(["a", "b"], kind)}),
                       tmp_path / side / "categories" / "item_id.parquet")
    (tmp_path / "data" / "valid").mkdir()
    require_same_ids(tmp_path / "run", tmp_path / "data" / "valid")   # the same values: accepted
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "value": pa.array([7, 8], pa.int64())}),
                   tmp_path / "data" / "categories" / "item_id.parquet")
    with pytest.raises(DataError, match="id 1 is '7' in the data, 'a' in the run"):
        require_same_ids(tmp_path / "run", tmp_path / "data" / "valid")
