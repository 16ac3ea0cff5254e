"""Experiment tracking: what each backend writes is read back with the backend's own reader."""
import builtins
import json

import pytest

from specc.errors import UserError
from specc.tracking import flatten, mlflow_name, open_loggers

CONFIG = {"spec": {"name": "sasrec", "body": {"kind": "transformer", "d_model": 64}, "tasks": [{"kind": "next_item"}]},
          "settings": {"epochs": 2, "lr": 0.001}}


def _log_a_run(loggers):
    loggers.log_config(CONFIG)
    for step in (1, 2, 3):
        loggers.log({"train/loss": 4.0 - step, "train/lr": 1e-3}, step)
    loggers.log({"epoch": 1, "loss": 2.5, "sessions_per_s": 900.0, "ndcg@10": 0.25, "auc": float("nan")}, 3)
    loggers.close()


def test_jsonl_keeps_epochs_in_log_jsonl_and_steps_beside_it(tmp_path):
    _log_a_run(open_loggers(tmp_path))
    epochs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert epochs == [{"epoch": 1, "loss": 2.5, "sessions_per_s": 900.0, "ndcg@10": 0.25, "auc": None, "step": 3}]
    assert [s["step"] for s in steps] == [1, 2, 3] and steps[0]["train/loss"] == 3.0


def test_tensorboard_event_files_hold_every_scalar(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _log_a_run(open_loggers(tmp_path, ["tensorboard"]))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "epoch/loss", "epoch/ndcg@10", "epoch/sessions_per_s"} <= set(scalars)
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("epoch/ndcg@10")] == [(3, 0.25)]
    assert events.Tags()["tensors"] == ["config/text_summary"]   # the spec, as text


def test_mlflow_run_holds_params_metrics_and_artifacts(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "plan.json").write_text("{}")
    (run_dir / "metrics.json").write_text("{}")
    loggers = open_loggers(run_dir, ["mlflow"], experiment="sasrec")
    _log_a_run(loggers)
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sasrec")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["spec.body.d_model"] == "64" and run.data.params["settings.lr"] == "0.001"
    assert json.loads(run.data.params["spec.tasks"]) == [{"kind": "next_item"}]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")] == \
        [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert run.data.metrics["ndcg_at_10"] == 0.25 and run.data.metrics["epoch"] == 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"plan", "run"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "run")} == \
        {"run/metrics.json", "run/log.jsonl", "run/steps.jsonl"}   # files only: not the trackers' own folders
    assert (run_dir / "mlflow" / "artifacts").is_dir()   # artifacts stay in the run directory


def test_a_failed_run_is_marked_failed(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    loggers = open_loggers(tmp_path, ["mlflow"])
    loggers.close(ok=False)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("specc").experiment_id])
    assert run.info.status == "FAILED"


def test_other_ranks_write_nothing(tmp_path):
    _log_a_run(open_loggers(tmp_path, ["tensorboard", "mlflow"], rank=1))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend, module", [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow")])
def test_a_missing_extra_is_named(tmp_path, monkeypatch, backend, module):
    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name == module or name.startswith(module + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", without)
    with pytest.raises(UserError, match=rf"pip install 'specc\[{backend}\]'"):
        open_loggers(tmp_path, [backend])


def test_unknown_backend_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown log_to wandb"):
        open_loggers(tmp_path, ["wandb"])


def test_names_and_params_fit_mlflow():
    assert mlflow_name("ndcg@10") == "ndcg_at_10" and mlflow_name("train/loss") == "train/loss"
    assert flatten({"a": {"b": [1, 2], "c": None, "d": {}}, "e": "x"}) == {"a.b": "[1, 2]", "a.c": "null",
                                                                        "a.d": "{}", "e": "x"}
