"""The command line: exit codes, plan output, and no traceback for bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specc.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", "specc.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_compile_prints_the_plan(capsys):
    assert main(["compile", str(ROOT / "specs" / "xlnet_clm.json")]) == 0
    out = capsys.readouterr().out
    for needle in ("parameters", "1,000 x 64", "aggregation concat", "projection mlp", "xlnet", "causal", "tied",
                   "config: d_model=64, n_head=4, n_layer=2, d_inner=256, dropout=0.1"):   # what HF's model gets
        assert needle in out


def test_compile_json_is_the_plan(capsys):
    assert main(["compile", str(ROOT / "specs" / "sasrec.json"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["body"]["architecture"] == "native" and plan["inputs"]["tables"][0]["rows"] == 1000


def test_schema_flag_overrides_the_spec_schema(capsys):
    assert main(["compile", str(ROOT / "specs" / "sasrec.json"), "--schema",
                 str(ROOT / "specs" / "schemas" / "retail.pbtxt")]) == 1
    assert "item_id-list" in capsys.readouterr().err


def test_invalid_spec_exits_1_with_every_error(capsys):
    assert main(["compile", str(ROOT / "tests" / "invalid" / "several_semantic_errors.json")]) == 1
    err = capsys.readouterr().err
    assert "4 errors" in err and "$.body.n_head" in err and "Traceback" not in err


def test_invalid_spec_as_json(capsys):
    assert main(["compile", "--json", str(ROOT / "tests" / "invalid" / "unknown_feature.json")]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert {e["code"] for e in errors} == {"unknown_column"}


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[1, 2, 3]", b"{oops", b'{"specc": 9}', b""])
def test_bad_files_exit_1_without_traceback(tmp_path, content):
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    result = run("compile", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "error" in result.stderr


def test_missing_and_unreadable_schema(tmp_path):
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec["schema"] = "nowhere.pbtxt"
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "garbled.pbtxt").write_text("feature { name: ")
    for args in (["compile", str(tmp_path / "spec.json")],
                 ["compile", str(tmp_path / "spec.json"), "--schema", str(tmp_path / "garbled.pbtxt")],
                 ["compile", str(tmp_path)]):
        result = run(*args)
        assert result.returncode == 1, args
        assert "Traceback" not in result.stderr


def test_usage_errors_exit_2():
    assert run("compile").returncode == 2
    assert run("frobnicate").returncode == 2
    assert run().returncode == 2
    assert run("train", "x.json", "--data", "d", "--out", "o", "--epochs", "-3").returncode == 2


def test_schema_command_prints_the_json_schema(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"].startswith("specc")


def test_out_paths_that_are_files_are_clear_errors(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (["data", "synth", "--out", str(afile), "--train", "20", "--valid", "5"],
                 ["train", str(ROOT / "specs" / "sasrec.json"), "--data", str(afile), "--out", str(afile)]):
        result = run(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_file_system_refusals_exit_1_not_as_internal_errors(tmp_path):
    """/proc refuses new folders even to root."""
    assert run("data", "synth", "--out", str(tmp_path / "d"), "--train", "20", "--valid", "5").returncode == 0
    result = run("train", str(ROOT / "specs" / "sasrec.json"), "--data", str(tmp_path / "d" / "train.parquet"),
                 "--out", "/proc/nowhere/run")
    assert result.returncode == 1, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert "/proc/nowhere" in result.stderr


def _spec_with_schema(tmp_path, schema) -> Path:
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec["schema"] = str(schema)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_only_regular_files_are_read_and_their_content_never_echoed(tmp_path):
    """/dev/zero was read until memory ran out, a FIFO hung forever, /etc/passwd was echoed in the error."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    secret = tmp_path / "secret.txt"
    secret.write_text("alice:x:1000:1000:hunter2:/home/alice:/bin/bash\n")
    for source in ("/dev/zero", fifo):
        for args in (["compile", str(source)], ["compile", str(_spec_with_schema(tmp_path, source))]):
            result = subprocess.run([sys.executable, "-m", "specc.cli", *args], capture_output=True, text=True,
                                    timeout=60)
            assert result.returncode == 1 and "not a regular file" in result.stderr, (args, result.stderr)
    result = run("compile", str(_spec_with_schema(tmp_path, secret)))
    assert result.returncode == 1 and "schema_unreadable" in result.stderr
    assert "alice" not in result.stderr and "hunter2" not in result.stderr


def test_files_beyond_the_size_limits_are_refused_without_reading_them(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(17 << 20)   # sparse: 17 MiB of zeros
    result = run("compile", str(big))
    assert result.returncode == 1 and "more than a spec file may" in result.stderr


def test_a_5000_digit_integer_is_a_spec_error(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('{"specc": 1, "training": {"epochs": ' + "9" * 5000 + "}}")
    result = run("compile", str(path))
    assert result.returncode == 1 and "[invalid_json]" in result.stderr and "more digits" in result.stderr


def test_cut_offs_beyond_the_catalog_and_unallocatable_catalogs_are_compile_errors(tmp_path, capsys):
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec["schema"] = str(ROOT / "specs" / "schemas" / "ecommerce.pbtxt")
    spec["tasks"][0]["metrics"] = {"ndcg": [10, 10 ** 12]}
    (tmp_path / "k.json").write_text(json.dumps(spec))
    assert main(["compile", str(tmp_path / "k.json")]) == 1
    err = capsys.readouterr().err
    assert "$.tasks[0].metrics.ndcg[1]: [cutoff_too_large]" in err and "at most 999" in err
    pbtxt = (ROOT / "specs" / "schemas" / "ecommerce.pbtxt").read_text().replace("max: 999\n", "max: 999999999999\n")
    (tmp_path / "huge.pbtxt").write_text(pbtxt)
    assert main(["compile", str(_spec_with_schema(tmp_path, tmp_path / "huge.pbtxt"))]) == 1
    err = capsys.readouterr().err
    assert "$.inputs.features[0]: [too_large]" in err and "1,000,000,000,000 rows" in err


def test_train_flags_beyond_the_spec_bounds_are_usage_errors():
    for flag, value in (("--epochs", "1" + "0" * 30), ("--batch-size", str(1 << 30))):
        assert run("train", "x.json", "--data", "d", "--out", "o", flag, value).returncode == 2
