"""Warm start (`specc train --init-from RUN_DIR`): a new run on new data from a trained run's weights."""
import json

import pytest
import torch

import specc
from specc.checkpoint import RunError
from specc.cli import main
from specc.schema import Schema
from specc.synth import default_schema, synthesize
from specc.train import train
from specc.warm_start import warm_start
from tests.helpers import ROOT


def _spec(tmp_path, d_model=16) -> dict:
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec.pop("schema")
    spec["body"].update(d_model=d_model, n_layer=1)
    spec["inputs"]["embeddings"]["default_dim"] = d_model
    return spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warm")
    synthesize(default_schema(), tmp / "data", n_train=200, n_valid=40, seed=5)
    (tmp / "spec.json").write_text(json.dumps(_spec(tmp)))
    train(str(tmp / "spec.json"), str(tmp / "data" / "train.parquet"), str(tmp / "run"), epochs=1,
          progress=False, log=lambda m: None)
    return tmp


def _grown(schema: Schema, extra: int) -> Schema:
    columns = schema.to_columns()
    for c in columns:
        if c["name"] == "item_id-list":
            c["cardinality"] += extra
            c["int_range"] = [0, c["cardinality"] - 1] if c["int_range"] else None
    return Schema.from_columns(columns)


def test_a_warm_start_begins_from_the_trained_weights(trained):
    spec = _spec(trained)
    old = specc.load(trained / "run")
    model = specc.build(spec, default_schema())
    message = warm_start(model, trained / "run")
    assert "initialised from" in message and "grown" not in message
    for name, tensor in old.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_a_grown_catalog_keeps_its_trained_rows_and_initialises_the_new_ones(trained):
    old = specc.load(trained / "run").state_dict()
    torch.manual_seed(1)
    model = specc.build(_spec(trained), _grown(default_schema(), 50))
    message = warm_start(model, trained / "run")
    assert "rows" in message
    grown = [n for n, t in model.state_dict().items() if t.dim() and t.shape[0] != old[n].shape[0]]
    assert grown
    for name in grown:
        rows = old[name].shape[0]
        assert torch.equal(model.state_dict()[name][:rows], old[name])
        assert model.state_dict()[name][rows:].abs().sum() > 0      # the new items got a fresh initialisation


def test_an_incompatible_plan_is_refused_with_the_reason(trained):
    model = specc.build(_spec(trained, d_model=32), default_schema())
    with pytest.raises(RunError, match=r"does not fit this spec's plan: .* is \[\d+, 16\] there, \[\d+, 32\] here"):
        warm_start(model, trained / "run")
    smaller = specc.build(_spec(trained), _grown(default_schema(), -10))
    with pytest.raises(RunError, match="does not fit"):
        warm_start(smaller, trained / "run")


def test_specc_train_init_from_trains_a_new_run_and_refuses_resume_with_it(trained, capsys):
    data = trained / "data" / "train.parquet"
    args = ["train", str(trained / "spec.json"), "--data", str(data), "--out", str(trained / "next"),
            "--epochs", "1", "--quiet", "--init-from", str(trained / "run")]
    assert main(args) == 0
    assert "initialised from" in capsys.readouterr().err
    metrics = json.loads((trained / "next" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["init_from"] == str((trained / "run").resolve())
    assert main(args[:6] + ["--resume", "--init-from", str(trained / "run")]) != 0
    assert "--init-from starts a new run" in capsys.readouterr().err
    assert main(args[:6] + ["--epochs", "2", "--quiet", "--resume"]) == 0   # extended, it still says where it began
    assert json.loads((trained / "next" / "metrics.json").read_text())["init_from"] == metrics["init_from"]
