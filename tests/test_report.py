"""specc report: a self-contained page with PNGs, for every example spec's run."""
import base64
import json
import re
from pathlib import Path

import pytest

from specc.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.json"))
PNG = b"\x89PNG\r\n\x1a\n"


def _data_for(schema_file: Path, root: Path) -> Path:
    """Tiny synthetic sessions for a schema, made once per schema."""
    from specc.schema import load_schema
    from specc.synth import synthesize
    out = root / schema_file.stem
    if not out.is_dir():
        synthesize(load_schema(str(schema_file)), out, n_train=96, n_valid=24, seed=0)
    return out


def _train(spec: Path, root: Path, epochs: int = 1) -> tuple[Path, Path]:
    schema = spec.parent / json.loads(spec.read_text())["schema"]
    data = _data_for(schema, root)
    run = root / f"run-{spec.stem}"
    assert main(["train", str(spec), "--data", str(data / "train.parquet"), "--eval", str(data / "valid.parquet"),
                 "--out", str(run), "--epochs", str(epochs), "--batch-size", "32", "--quiet"]) == 0
    return run, data


def _images(page: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(b64) for alt, b64 in re.findall(r"<img alt='(\w+)' src='data:image/png;base64,"
                                                                   r"([A-Za-z0-9+/=]+)'>", page)}


@pytest.mark.slow
def test_report_of_a_next_item_run(tmp_path, capsys):
    run, data = _train(ROOT / "specs" / "multitask.json", tmp_path, epochs=2)
    out = tmp_path / "report"
    assert main(["report", str(run), "--data", str(data / "valid.parquet"), "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    images = _images(page)
    assert set(images) == {"plan", "curves", "throughput", "popularity"}
    for name, png in images.items():   # embedded and written alike
        assert png.startswith(PNG) and (out / f"{name}.png").read_bytes() == png
    assert "src='http" not in page and "<script" not in page   # self-contained
    assert "ndcg@10" in page   # the final metrics table


def test_popularity_needs_data_and_a_next_item_task(tmp_path):
    run, _ = _train(ROOT / "specs" / "purchase_classifier.json", tmp_path)
    assert main(["report", str(run)]) == 0
    page = (run / "report" / "report.html").read_text()
    assert set(_images(page)) == {"plan", "curves", "throughput"} and "no next_item task" in page
    other = run
    run, _ = _train(ROOT / "specs" / "sasrec.json", tmp_path)
    assert main(["report", str(run)]) == 0
    assert "pass --data" in (run / "report" / "report.html").read_text()
    # into its own run's folder, yes; into another run's, no
    assert main(["report", str(run), "--out", str(run / "mine")]) == 0
    assert main(["report", str(run), "--out", str(other / "theirs")]) == 1
    assert not (other / "theirs").exists()


def test_not_a_run_directory_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.parametrize("spec, heads", [("multitask", ["next", "purchase", "revenue"]),
                                         ("electra_rtd", ["next_item", "rtd discriminator"])])
def test_the_plan_diagram_counts_every_parameter(spec, heads):
    import specc
    from specc.report_plan import _boxes, part_parameters
    model = specc.build(ROOT / "specs" / f"{spec}.json")
    parts = part_parameters(model)
    tables = sum(t.rows * t.dim for t in model.plan.inputs.tables)
    assert tables + sum(parts.values()) == model.plan.parameters
    boxes = _boxes(model.plan.to_dict(), parts)
    assert [b[1] for b in boxes["heads"]] == heads
    assert any("[B, L, 64]" in line for line in boxes["body"][0][2])


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_example_spec_run_renders(spec, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "report-runs"
    run, data = _train(spec, root)
    assert main(["report", str(run), "--data", str(data / "valid.parquet")]) == 0
    assert {"plan", "curves", "throughput"} <= set(_images((run / "report" / "report.html").read_text()))
