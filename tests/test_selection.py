"""Model selection by validation: the best evaluation, patience, and the metric checked at compile time."""
import json

import pytest

import specc
from specc.errors import SpecError
from specc.selection import Selection, metric_mode
from specc.spec import EarlyStopping
from tests.helpers import ROOT


def _selection(**kw) -> Selection:
    return Selection.from_spec(EarlyStopping(**kw))


def test_the_best_epoch_is_kept_and_patience_counts_evaluations_since_it():
    s = _selection(metric="ndcg@10", patience=2)
    improved = [s.update({"ndcg@10": v}, epoch) for epoch, v in enumerate([0.1, 0.3, 0.2, 0.3, 0.25], start=1)]
    assert improved == [True, True, False, False, False]
    assert (s.best, s.best_epoch, s.should_stop) == (0.3, 2, True)


def test_min_delta_and_error_metrics_go_down():
    s = _selection(metric="recall@10", patience=1, min_delta=0.05)
    assert s.update({"recall@10": 0.50}, 1) and not s.update({"recall@10": 0.54}, 2) and s.should_stop
    err = _selection(metric="price/rmse", patience=5)
    assert err.mode == "min" and metric_mode("ndcg@10") == "max"
    assert err.update({"price/rmse": 2.0}, 1) and err.update({"price/rmse": 1.5}, 2)
    assert not err.update({"price/rmse": 1.7}, 3) and err.best_epoch == 2


def test_a_nan_evaluation_never_becomes_the_best():
    s = _selection(metric="ndcg@10", patience=3)
    assert not s.update({"ndcg@10": float("nan")}, 1) and s.best is None
    assert not s.update({"ndcg@10": None}, 2)   # how log.jsonl writes NaN, replayed
    assert s.update({"ndcg@10": 0.0}, 3) and s.bad_evaluations == 0


def test_the_fields_an_epoch_record_adds_are_not_taken_for_metrics():
    from specc.loop import Position
    from specc.selection import NOT_METRICS
    assert set(Position().finish_epoch()) | {"world_size"} == set(NOT_METRICS)


def test_replaying_the_logged_epochs_rebuilds_the_selection():
    s = _selection(metric="ndcg@10", patience=3)
    s.update({"ndcg@10": 0.4}, 1), s.update({"ndcg@10": 0.3}, 2)
    again = _selection(metric="ndcg@10", patience=3)
    again.replay([{"epoch": 1, "loss": 2.0, "ndcg@10": 0.4, "step": 4, "seconds": 1.5, "world_size": 1},
                  {"epoch": 2, "ndcg@10": 0.3}, {"epoch": 3, "loss": 1.0}])
    assert again == s and again.summary() == {"selected_by": "ndcg@10", "best_epoch": 1, "best_ndcg@10": 0.4}
    assert again.best_metrics == {"ndcg@10": 0.4}


def _spec(early_stopping: dict) -> dict:
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec["schema"] = str(ROOT / "specs" / spec["schema"])
    spec["training"]["early_stopping"] = early_stopping
    return spec


def test_early_stopping_must_select_by_a_metric_a_task_reports():
    assert specc.compile(_spec({"metric": "recall@20", "patience": 2}))
    with pytest.raises(SpecError) as err:
        specc.compile(_spec({"metric": "ndcg@5"}))
    issue = next(i for i in err.value.issues if i.path == "$.training.early_stopping.metric")
    assert issue.code == "unknown_metric" and "ndcg@10" in issue.hint


def _train_files(tmp_path, early_stopping: dict):
    from specc.synth import default_schema, synthesize
    synthesize(default_schema(), tmp_path / "data", n_train=150, n_valid=30, seed=6)
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec.pop("schema")
    spec["body"].update(d_model=16, n_layer=1)
    spec["inputs"]["embeddings"]["default_dim"] = 16
    spec["training"]["early_stopping"] = early_stopping
    # a constant rate: a run cut short after an epoch trains that epoch as a longer run does
    spec["training"].update(schedule="constant", warmup=0.0)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return str(tmp_path / "spec.json"), str(tmp_path / "data" / "train.parquet"), str(tmp_path / "data" / "valid.parquet")


def test_training_stops_when_the_metric_stops_improving_and_a_resume_keeps_the_selection(tmp_path):
    from specc.train import train
    # no later evaluation can beat the first by a whole unit: the run stops after patience evaluations
    spec, data, valid = _train_files(tmp_path, {"metric": "recall@10", "patience": 2, "min_delta": 1.0})
    said = []
    result = train(spec, data, str(tmp_path / "run"), eval_data=valid, epochs=6, batch_size=32, progress=False,
                   log=said.append)
    assert (result["epochs"], result["best_epoch"], result["stopped_early"]) == (3, 1, True)
    assert result["selected_by"] == "recall@10" and result["stopped"] == "early_stopping"
    assert (result["weights"], result["kept_epoch"]) == ("best epoch 1", 1)
    assert any(line.startswith("early stopping after epoch 3") for line in said)
    first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert {k: result[k] for k in first if "@" in k} == {k: v for k, v in first.items() if "@" in k}
    # a run cut short after epoch 1, resumed: the selection is replayed from its log, so it stops at the same epoch
    train(spec, data, str(tmp_path / "cut"), eval_data=valid, epochs=1, batch_size=32, progress=False,
          log=lambda m: None)
    resumed = train(spec, data, str(tmp_path / "cut"), eval_data=valid, epochs=6, resume=True, progress=False,
                    log=lambda m: None)
    assert (resumed["epochs"], resumed["best_epoch"], resumed["stopped_early"]) == (3, 1, True)
    assert {k: v for k, v in resumed.items() if "seconds" not in k and "per_s" not in k} == \
        {k: v for k, v in result.items() if "seconds" not in k and "per_s" not in k}
    for run in ("run", "cut"):   # the best (epoch 1, step 5) is kept beside the latest (epoch 3)
        assert json.loads((tmp_path / run / "best.json").read_text())["step"] == 5
        assert len(list((tmp_path / run / "checkpoints").iterdir())) == 2
    kept, other = specc.load(tmp_path / "run").state_dict(), specc.load(tmp_path / "cut").state_dict()
    assert all(kept[k].equal(other[k]) for k in kept)
    again = train(spec, data, str(tmp_path / "cut"), eval_data=valid, epochs=6, resume=True, progress=False,
                  log=said.append)
    assert again["epochs"] == 3 and "early stopping ended it" in said[-1]


def test_early_stopping_needs_validation_data(tmp_path):
    from specc.errors import UserError
    from specc.train import train
    spec, data, _ = _train_files(tmp_path, {"metric": "recall@10"})
    with pytest.raises(UserError, match="pass --eval"):
        train(spec, data, str(tmp_path / "run"), epochs=1, progress=False, log=lambda m: None)
