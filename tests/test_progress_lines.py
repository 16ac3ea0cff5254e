"""Progress when stderr is not a terminal: periodic log lines instead of a bar (a run is never silent for long)."""
import json

import specc.progress as progress
from specc.cli import main
from specc.synth import default_schema, synthesize
from tests.helpers import ROOT


def test_progress_lines_say_where_the_epoch_is_at_most_every_interval():
    said = []
    lines = progress.ProgressLines(total=5, desc="epoch 1/2", say=said.append, every=0.0)
    lines.set_postfix(loss="2.5000", sessions_s="1200")
    lines.update(1)
    assert said == ["epoch 1/2: batch 1/5  loss 2.5000  sessions/s 1200"]
    slow = progress.ProgressLines(total=5, desc="epoch 1/2", say=said.append, every=3600.0)
    slow.update(1), slow.update(1)
    assert len(said) == 1


def test_a_training_run_without_a_terminal_logs_progress_lines_unless_quiet(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_LINE_SECONDS", 0.0)
    synthesize(default_schema(), tmp_path / "data", n_train=120, n_valid=20, seed=2)
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec.pop("schema")
    spec["body"].update(d_model=16, n_layer=1)
    spec["inputs"]["embeddings"]["default_dim"] = 16
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    args = ["train", str(tmp_path / "spec.json"), "--data", str(tmp_path / "data" / "train.parquet"),
            "--epochs", "1", "--batch-size", "32"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert "epoch 1/1: batch 1/" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert "batch 1/" not in capsys.readouterr().err
