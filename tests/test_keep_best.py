"""Keeping the best checkpoint (training.early_stopping): best.json beside the latest, the kept weights loaded by
every reader, their metrics in metrics.json, and the prepared test split evaluated once with them."""
import json

import numpy as np
import polars as pl
import pytest
import torch

import specc
from specc.checkpoint import BEST, load_weights, published
from specc.cli import main
from specc.train import train
from specc.warm_start import warm_start
from tests.helpers import ROOT

# no evaluation after the first beats it by a whole unit, and patience outlasts the run: the best is epoch 1
FIRST_IS_BEST = {"metric": "ndcg@10", "patience": 5, "min_delta": 1.0}


def _spec(early_stopping=None, feature="item_id-list") -> dict:
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec.pop("schema")
    spec["inputs"].update(features=[feature], embeddings={"default_dim": 16})
    spec["body"].update(d_model=16, n_layer=1)
    # a constant rate: a 1-epoch run trains its epoch as the first epoch of a longer one
    spec["training"].update(batch_size=32, schedule="constant", warmup=0.0, early_stopping=early_stopping)
    return spec


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from specc.synth import default_schema, synthesize
    folder = tmp_path_factory.mktemp("keep_best")
    synthesize(default_schema(), folder, n_train=128, n_valid=40, seed=8)
    return folder


def _train(folder, out, spec, epochs):
    return train(spec, str(folder / "train.parquet"), str(out), eval_data=str(folder / "valid.parquet"),
                 epochs=epochs, progress=False, log=lambda m: None)


def _same_weights(a, b) -> bool:
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_best_epoch_is_kept_loaded_and_reported_beside_the_latest(synth, tmp_path, capsys):
    run, one = tmp_path / "run", tmp_path / "one"
    result = _train(synth, run, _spec(FIRST_IS_BEST), epochs=3)
    _train(synth, one, _spec(), epochs=1)
    assert (result["weights"], result["kept_epoch"], result["best_epoch"], result["epochs"]) == \
        ("best epoch 1", 1, 1, 3)
    best, latest = published(run, BEST), published(run)
    assert (best["epoch"], best["step"], latest["step"]) == (1, 4, 12)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [best["path"].name, latest["path"].name]
    assert _same_weights(specc.load(run), specc.load(one))   # the kept weights are epoch 1's
    assert f"initialised from {run} (step 4)" == warm_start(specc.load(one), run)   # --init-from starts from them
    record = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(metrics[k] == record[k] for k in record if "@" in k) and metrics["kept_epoch"] == 1
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert (metrics["loss"], metrics["last_loss"]) == (record["loss"], last["loss"])   # the kept epoch's loss
    assert best["metrics"]["ndcg@10"] == record["ndcg@10"] and best["selected_by"] == "ndcg@10"
    assert main(["evaluate", str(run), "--data", str(synth / "valid.parquet")]) == 0
    assert json.loads(capsys.readouterr().out)["ndcg@10"] == pytest.approx(record["ndcg@10"], abs=1e-6)
    # the latest checkpoint is still there for --resume: extending the run continues from epoch 3
    extended = train(_spec(FIRST_IS_BEST), str(synth / "train.parquet"), str(run), eval_data=str(synth /
                     "valid.parquet"), epochs=4, resume=True, progress=False, log=lambda m: None)
    assert (extended["epochs"], extended["kept_epoch"]) == (4, 1) and published(run)["step"] == 16


def test_without_selection_the_last_epoch_is_kept_and_no_best_is_written(synth, tmp_path):
    result = _train(synth, tmp_path / "run", _spec(), epochs=2)
    assert (result["weights"], result["kept_epoch"], result["stopped"]) == ("last epoch", 2, "epochs")
    assert not (tmp_path / "run" / BEST).exists() and len(list((tmp_path / "run" / "checkpoints").iterdir())) == 1


def test_a_moving_best_leaves_only_the_best_and_the_latest(synth, tmp_path):
    run = tmp_path / "run"
    result = _train(synth, run, _spec({"metric": "ndcg@10", "patience": 5}), epochs=3)
    values = [json.loads(line)["ndcg@10"] for line in (run / "log.jsonl").read_text().splitlines()]
    best_epoch = values.index(max(values)) + 1   # the first of equal values: a tie is no improvement
    assert result["kept_epoch"] == published(run, BEST)["epoch"] == best_epoch
    named = {published(run, BEST)["path"].name, published(run)["path"].name}
    assert {p.name for p in (run / "checkpoints").iterdir()} == named


def _events(path, users=120, items=30, seed=3):
    """Users walking a ring of items (mostly +1, sometimes a jump): learnable, with a last item to predict."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        item, length = int(rng.integers(items)), int(rng.integers(5, 10))
        for t in range(length):
            rows.append((f"u{user}", f"i{item}", t))
            item = (item + 1) % items if rng.random() < 0.8 else int(rng.integers(items))
    frame = pl.DataFrame(rows, schema=["user", "item", "minute"], orient="row")
    frame.with_columns(ts=pl.datetime(2024, 1, 1) + pl.duration(minutes=pl.col("minute"))).write_parquet(path)


def test_a_prepared_test_split_is_evaluated_with_the_kept_weights(tmp_path, capsys):
    from specc.evaluation import evaluate, open_for
    _events(tmp_path / "events.parquet")
    data = tmp_path / "data"
    assert main(["data", "prepare", str(tmp_path / "events.parquet"), "--out", str(data), "--item", "item",
                 "--time", "ts", "--user", "user", "--split", "last"]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    train(_spec(FIRST_IS_BEST, feature="item-list"), str(data / "train"), str(run), eval_data=str(data / "valid"),
          epochs=2, progress=False, log=lambda m: None)
    assert main(["evaluate", str(run), "--data", str(data / "test")]) == 0
    on_test = json.loads(capsys.readouterr().out)
    # what it evaluated: the weights best.json names (epoch 1), not the latest checkpoint's
    model = specc.load(run)
    load_weights(published(run, BEST), model)
    dataset = open_for(model, str(data / "test"), specc.checkpoint.run_schema(run), 2)
    assert on_test["ndcg@10"] == pytest.approx(evaluate(model, dataset)["ndcg@10"], abs=1e-6)
    load_weights(published(run), model)
    assert not _same_weights(model, specc.load(run))
    assert on_test["eval_sessions"] == 120 and on_test["ndcg@10"] != json.loads((run / "metrics.json").read_text())[
        "ndcg@10"]   # another split than the one selected on
