"""`specc score`: given candidates scored per row, as Model.score and recommend score them; raw ids in and out."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import specc
from specc.checkpoint import run_schema
from specc.cli import main
from specc.evaluation import open_for
from tests.helpers import train_on_prepared

ITEMS = [f"sku-{i}" for i in range(12)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained on prepared data of raw string ids (so it has an id mapping), and its validation data."""
    tmp = tmp_path_factory.mktemp("score")
    rows = [(f"s{s}", ITEMS[(s * 5 + j * (1 + s % 3)) % 12], datetime(2024, 1, 1) + timedelta(hours=s, minutes=j))
            for s in range(300) for j in range(3 + s % 4)]
    return train_on_prepared(tmp, rows, ["session_id", "item_id", "ts"], max_length=4, evaluate=False)


def valid_with(run, tmp_path, **columns):
    """The validation data with extra columns, in row groups of 5 rows (so candidates cross row groups)."""
    table = pq.read_table(run / "data" / "valid")
    for name, values in columns.items():
        table = table.append_column(name, pa.array(values(table.num_rows)))
    pq.write_table(table, tmp_path / "valid.parquet", row_group_size=5)
    return tmp_path / "valid.parquet"


def ids_of(run):
    return dict(pl.read_parquet(run / "data" / "categories" / "item_id.parquet").select("value", "id").iter_rows())


def model_scores(run, data, candidates) -> list[list[float]]:
    """Model.score of each row's candidate ids (`candidates(row)`), batch by batch."""
    model = specc.load(run / "run")
    out = []
    for rows, batch in open_for(model, str(data), run_schema(run / "run"), 1, with_targets=False).indexed_batches(7):
        ids = torch.tensor([candidates(r) for r in rows.tolist()])
        out += model.score(batch, ids).tolist()
    return out


def assert_close(got: list[list[float]], want: list[list[float]]):
    """Row by row: the scores written (6 decimals in JSON) against the model's."""
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got, want):
        assert torch.allclose(torch.tensor(g, dtype=torch.float64), torch.tensor(w, dtype=torch.float64), atol=1e-5)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scores_equal_model_score_and_recommend_s_scores(run, tmp_path):
    valid = run / "data" / "valid"
    ids = ids_of(run)
    out = tmp_path / "same.jsonl"
    assert main(["score", str(run / "run"), "--data", str(valid), "--items", "sku-3,sku-0,sku-7",
                 "--out", str(out)]) == 0
    got = lines(out)
    want = model_scores(run, valid, lambda row: [ids["sku-3"], ids["sku-0"], ids["sku-7"]])
    assert [g["item_ids"] for g in got] == [["sku-3", "sku-0", "sku-7"]] * len(want)
    assert_close([g["scores"] for g in got], want)
    # recommend's top items, given back as candidates (model ids), get the scores recommend ranked them by
    recs = tmp_path / "recs.jsonl"
    assert main(["recommend", str(run / "run"), "--data", str(valid), "--k", "4", "--ids", "internal",
                 "--out", str(recs)]) == 0
    top = {r["row"]: r for r in lines(recs)}
    data = valid_with(run, tmp_path, cands=lambda n: [top[r]["item_ids"] for r in range(n)])
    assert main(["score", str(run / "run"), "--data", str(data), "--candidates", "cands", "--ids", "internal",
                 "--out", str(tmp_path / "top.jsonl")]) == 0
    scored = lines(tmp_path / "top.jsonl")
    assert [line["item_ids"] for line in scored] == [top[line["row"]]["item_ids"] for line in scored]
    assert_close([line["scores"] for line in scored], [top[line["row"]]["scores"] for line in scored])


def test_raw_candidates_per_row_round_trip(run, tmp_path):
    ids = ids_of(run)
    per_row = [[ITEMS[(r + j) % 12] for j in range(r % 4)] for r in range(200)]   # rows of 0 to 3 candidates
    data = valid_with(run, tmp_path, cands=lambda n: per_row[:n])
    out = tmp_path / "raw.parquet"
    assert main(["score", str(run / "run"), "--data", str(data), "--candidates", "cands", "--out", str(out)]) == 0
    got = pq.read_table(out).to_pylist()
    assert [g["row"] for g in got] == list(range(len(got))) and [g["item_ids"] for g in got] == per_row[:len(got)]
    width = 3
    want = model_scores(run, data, lambda r: [ids[v] for v in per_row[r]] + [1] * (width - len(per_row[r])))
    assert_close([g["scores"] for g in got], [w[:len(p)] for w, p in zip(want, per_row)])


@pytest.mark.parametrize("args, column, message", [
    (["--candidates", "cands"], lambda n: [["sku-1"], ["nope", "sku-2"]] + [["sku-1"]] * (n - 3) + [["zilch"]],
     ["2 data problems", "row 1: 'nope' is unknown to the run's mapping of 'item_id'", "'zilch'"]),
    (["--candidates", "cands", "--ids", "internal"], lambda n: [[1, 2]] * (n - 2) + [[0], [9999]],
     ["2 data problems", ": 0 is not an item id of the model's catalog (1..12", ": 9999 is not"]),
    (["--candidates", "cands", "--ids", "internal"], lambda n: [[1.5]] * n, ["row 0: 1.5"]),
    (["--candidates", "missing"], None, ["no column 'missing' for --candidates"]),
    (["--candidates", "cands"], lambda n: list(range(n)), ["holds int64, not lists of items"]),
    (["--items", "sku-1,,sku-2"], None, ["none empty"]),
    (["--items", "sku-1", "--ids", "internal"], None, ["item ids here are integers"]),
    (["--items", "sku-1,sku-99"], None, ["--items: 'sku-99' is unknown to the run's mapping"]),
    (["--items", "sku-1", "--out", "x.csv"], None, ["use a .parquet file"]),
])
def test_bad_candidates_are_clear_errors_and_nothing_is_written(run, tmp_path, capsys, args, column, message):
    data = valid_with(run, tmp_path, **({"cands": column} if column else {}))
    out = tmp_path / "out.jsonl"
    code = main(["score", str(run / "run"), "--data", str(data), *args, *([] if "--out" in args else
                                                                          ["--out", str(out)])])
    err = capsys.readouterr().err
    assert code == 1 and all(m in err for m in message), err
    assert "Traceback" not in err and "internal error" not in err and not out.exists()


def test_a_candidate_list_and_one_list_for_all_are_exclusive_and_required(run):
    for args in ([], ["--items", "sku-1", "--candidates", "c"]):
        with pytest.raises(SystemExit) as exit_:
            main(["score", str(run / "run"), "--data", str(run / "data" / "valid"), *args])
        assert exit_.value.code == 2


@pytest.mark.slow
def test_two_processes_write_what_one_writes(run, tmp_path):
    data = valid_with(run, tmp_path, cands=lambda n: [[ITEMS[r % 12], ITEMS[(r * 7) % 12]] for r in range(n)])
    args = ["score", str(run / "run"), "--data", str(data), "--candidates", "cands", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "specc", *args], capture_output=True, text=True)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "specc", *args], capture_output=True, text=True)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    assert one.stdout.splitlines() == two.stdout.splitlines() and len(one.stdout.splitlines()) > 5


def test_raw_candidates_need_the_run_s_mapping(run, tmp_path, capsys):
    import shutil
    bare = tmp_path / "bare"
    shutil.copytree(run / "run", bare)
    shutil.rmtree(bare / "categories")
    valid = str(run / "data" / "valid")
    assert main(["score", str(bare), "--data", valid, "--items", "sku-1", "--ids", "raw"]) == 1
    assert "--ids internal" in capsys.readouterr().err
    # without a mapping the candidates are the model's ids, as they are without --ids
    assert main(["score", str(bare), "--data", valid, "--items", "2,5", "--out", str(tmp_path / "s.jsonl")]) == 0
    assert {tuple(line["item_ids"]) for line in lines(tmp_path / "s.jsonl")} == {(2, 5)}


def test_a_prepared_id_column_read_as_raw_values_counts_every_row_and_names_the_fix(run, tmp_path, capsys):
    rows = pq.read_table(run / "data" / "valid").num_rows
    assert rows > 10   # more rows than the error shows
    code = main(["score", str(run / "run"), "--data", str(run / "data" / "valid"), "--candidates", "item_id-list",
                 "--out", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err
    assert code == 1 and f"{rows} data problems" in err and "needs --ids internal" in err, err
    assert main(["score", str(run / "run"), "--data", str(run / "data" / "valid"), "--candidates", "item_id-list",
                 "--ids", "internal", "--out", str(tmp_path / "out.jsonl")]) == 0
