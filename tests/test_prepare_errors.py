"""Bad input to specc data prepare: one clear error naming the file and column, exit 1, no traceback, and no
output folder left behind."""
from __future__ import annotations

import json
import os
from datetime import datetime

import polars as pl
import pytest

from specc.cli import main
from specc.errors import DataError, SpecError
from specc.prepare import prepare

BASE = {"item": "item", "time": "ts", "session": "session"}


def run_cli(capsys, events, out, *extra):
    code = main(["data", "prepare", *([events] if events else []), "--out", str(out), "--item", "item", "--time",
                 "ts", "--session", "session", "--quiet", *extra])
    err = capsys.readouterr().err
    return code, err


def good_frame(n=6):
    return pl.DataFrame({"session": [f"s{i // 3}" for i in range(n)], "item": [f"i{i % 4}" for i in range(n)],
                         "ts": [f"2024-01-01T00:0{i}:00" for i in range(n)]})


def assert_refused(capsys, tmp_path, events, *needles, extra=()):
    out = tmp_path / "out"
    code, err = run_cli(capsys, events, out, *extra)
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err
    for needle in needles:
        assert needle in err, err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out.tmp")]
    return err


def test_missing_column(tmp_path, capsys):
    path = tmp_path / "log.parquet"
    good_frame().rename({"item": "item_id"}).write_parquet(path)
    assert_refused(capsys, tmp_path, str(path), str(path), "no column 'item'", "did you mean 'item_id'")


def test_time_column_that_is_not_a_time(tmp_path, capsys):
    path = tmp_path / "log.csv"
    good_frame().with_columns(ts=pl.Series(["2024-01-01T00:00:00", "soon"] * 3)).write_csv(path)
    assert_refused(capsys, tmp_path, str(path), str(path), "'ts'", "'soon'", "not times")


def test_boolean_time_column(tmp_path, capsys):
    path = tmp_path / "log.parquet"
    good_frame().with_columns(ts=pl.lit(True)).write_parquet(path)
    assert_refused(capsys, tmp_path, str(path), "'ts' is Boolean, not a time")


def test_continuous_columns_that_are_not_numbers_are_named_at_once(tmp_path, capsys):
    path = tmp_path / "log.parquet"
    good_frame().with_columns(category=pl.lit("x"), when=pl.lit(datetime(2024, 1, 1)), tags=pl.lit([1, 2]),
                              price=pl.lit(1.5), clicks=pl.lit(3), seen=pl.lit(True)).write_parquet(path)
    err = assert_refused(capsys, tmp_path, str(path), "continuous column 'category' is String", "--categorical",
                         "continuous column 'when' is Datetime", "--time", "continuous column 'tags' is List(Int64)",
                         "integer, float, decimal or boolean",
                         extra=["--continuous", "category,when,tags,price,clicks,seen"])
    assert not [c for c in ("'price'", "'clicks'", "'seen'") if c in err]
    code, err = run_cli(capsys, str(path), tmp_path / "numbers", "--continuous", "price,clicks,seen",
                        "--valid-fraction", "0.5")
    assert code == 0, err


def test_session_key_with_nulls(tmp_path, capsys):
    path = tmp_path / "log.parquet"
    good_frame().with_columns(session=pl.Series(["s0", None, "s0", "s1", "s1", "s1"])).write_parquet(path)
    assert_refused(capsys, tmp_path, str(path), str(path), "'session' is null in 1 of 6 events")


def test_empty_file(tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_text("")
    assert_refused(capsys, tmp_path, str(path), str(path), "empty")


def test_header_only_csv_has_no_events(tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_text("session,item,ts\n")
    assert_refused(capsys, tmp_path, str(path), "no events")


def test_ragged_csv(tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_text("session,item,ts\ns0,i0,2024-01-01\ns0,2024-01-02\ns1,i1,2024-01-03\n")
    assert_refused(capsys, tmp_path, str(path), str(path), "line 3 has 2 fields", "ragged")


def test_schema_clash_between_files_of_a_folder(tmp_path, capsys):
    folder = tmp_path / "logs"
    folder.mkdir()
    good_frame().write_parquet(folder / "a.parquet")
    good_frame().with_columns(item=pl.Series(range(6))).write_parquet(folder / "b.parquet")
    assert_refused(capsys, tmp_path, str(folder), "b.parquet", "'item' is Int64, but String in", "a.parquet")


def test_missing_path_and_not_a_log(tmp_path, capsys):
    assert_refused(capsys, tmp_path, str(tmp_path / "nope.parquet"), "does not exist")
    (tmp_path / "notes.txt").write_text("hi")
    assert_refused(capsys, tmp_path, str(tmp_path / "notes.txt"), "not a .parquet or .csv file")


def test_out_that_is_not_empty_is_left_alone(tmp_path, capsys):
    path = tmp_path / "log.parquet"
    good_frame().write_parquet(path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run_cli(capsys, str(path), out)
    assert code == 1 and "not empty" in err and (out / "keep.txt").read_text() == "mine"


def test_failure_after_writing_started_leaves_no_folder(tmp_path, monkeypatch):
    path = tmp_path / "log.parquet"
    good_frame().write_parquet(path)
    from specc.prepare import finish

    def broken(*args, **kwargs):
        raise DataError(["disk trouble"])
    monkeypatch.setattr(finish, "write_schema", broken)
    with pytest.raises(DataError):
        prepare({**BASE, "events": str(path), "out": str(tmp_path / "out"), "valid_fraction": 0.5})
    assert os.listdir(tmp_path) == ["log.parquet"]


def test_bad_data_spec_lists_every_problem_with_paths(tmp_path):
    spec = tmp_path / "prep.json"
    spec.write_text(json.dumps({"events": "x.parquet", "out": "o", "item": "item", "time": "ts", "session": "s",
                                "user": "u", "split": "random", "min_lenght": 2}))
    with pytest.raises(SpecError) as info:
        from specc.prepare import load_prepare_spec
        load_prepare_spec(str(spec))
    found = {(i.path, i.code) for i in info.value.issues}
    assert ("$.split", "invalid_choice") in found and ("$.min_lenght", "unknown_key") in found
    assert any("did you mean 'min_length'" in (i.hint or "") for i in info.value.issues)


def test_derive_never_writes_a_list_column_twice():
    from specc.prepare import validate_prepare_spec
    with pytest.raises(SpecError) as info:   # --derive timestamp lists the time column under its own name
        validate_prepare_spec({**BASE, "events": "x", "out": "o", "time": "time_since_prev",
                               "derive": ["timestamp", "time_since_prev"]})
    assert "'time_since_prev-list' twice" in info.value.issues[0].message
    with pytest.raises(SpecError):
        validate_prepare_spec({**BASE, "events": "x", "out": "o", "categorical": ["time_since_prev"],
                               "derive": ["time_since_prev"]})


def test_usage_errors(tmp_path, capsys):
    code = main(["data", "prepare", "--out", str(tmp_path / "o"), "--item", "i", "--time", "t", "--session", "s"])
    assert code == 1 and "EVENTS" in capsys.readouterr().err
    code = main(["data", "prepare", "x", "--out", "o", "--item", "i", "--time", "t", "--session", "s",
                 "--user", "u"])
    assert code == 1 and "exactly one of" in capsys.readouterr().err


def test_epoch_in_another_unit(tmp_path, capsys):
    path = tmp_path / "log.parquet"
    good_frame().with_columns(ts=pl.Series([1_700_000_000_000 + i for i in range(6)])).write_parquet(path)
    assert_refused(capsys, tmp_path, str(path), "--time-unit", "'ts'")
    code, err = run_cli(capsys, str(path), tmp_path / "ms", "--time-unit", "ms", "--valid-fraction", "0.5")
    assert code == 0, err


def test_csv_value_of_another_kind_after_the_guessed_rows(tmp_path, capsys):
    path = tmp_path / "log.csv"
    rows = [f"s{i // 3},{i},2024-01-01T00:00:00" for i in range(10_500)] + ["s9,abc,2024-01-01T00:00:01"]
    path.write_text("session,item,ts\n" + "\n".join(rows) + "\n")
    assert_refused(capsys, tmp_path, str(path), str(path), "abc", "'item'", "guessed from its first rows")


def test_filtering_every_session_away_says_which_option_filtered(tmp_path, capsys):
    path = tmp_path / "log.parquet"
    good_frame().write_parquet(path)
    assert_refused(capsys, tmp_path, str(path), "0 session(s) left after filtering", "lower --min-length",
                   extra=("--min-length", "50"))
