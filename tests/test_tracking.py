"""Experiment tracking: what each backend writes is read back with the backend's own reader."""
import builtins
import json
from pathlib import Path

import pytest

from specc.cli import main
from specc.errors import UserError
from specc.tracking import Tracking, open_trackers
from specc.tracking_mlflow import flatten, mlflow_name

ROOT = Path(__file__).resolve().parent.parent
CONFIG = {"spec": {"name": "sasrec", "body": {"kind": "transformer", "d_model": 64}, "tasks": [{"kind": "next_item"}]},
          "settings": {"epochs": 2, "lr": 0.001}}


def _trackers(run_dir, *backends, **kwargs):
    return open_trackers(run_dir, Tracking(log_to=backends), **kwargs)


def _log_a_run(trackers, ok=True):
    trackers.log_config(CONFIG)
    for step in (1, 2, 3):
        trackers.log({"train/loss": 4.0 - step, "train/lr": 1e-3}, step)
    trackers.log({"epoch": 1, "loss": 2.5, "sessions_per_s": 900.0, "ndcg@10": 0.25, "auc": float("nan")}, 3)
    trackers.close()   # the loop's close leaves them open
    trackers.finish(ok)


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def _mlflow_runs(store: Path, experiment: str):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_tensorboard_event_files_hold_every_scalar(tmp_path):
    pytest.importorskip("tensorboard")
    _log_a_run(_trackers(tmp_path, "tensorboard"))
    events = _events(tmp_path / "tensorboard")
    assert {"train/loss", "train/lr", "epoch/loss", "epoch/ndcg@10", "epoch/sessions_per_s"} <= \
        set(events.Tags()["scalars"])
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("epoch/ndcg@10")] == [(3, 0.25)]
    assert events.Tags()["tensors"] == ["config/text_summary"]   # the spec, as text


def test_mlflow_run_holds_params_metrics_and_artifacts(tmp_path):
    pytest.importorskip("mlflow")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "plan.json").write_text("{}")
    (run_dir / "metrics.json").write_text("{}")
    _log_a_run(_trackers(run_dir, "mlflow", experiment="sasrec"))
    client, (run,) = _mlflow_runs(run_dir / "mlflow" / "mlflow.db", "sasrec")
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["spec.body.d_model"] == "64" and run.data.params["settings.lr"] == "0.001"
    assert json.loads(run.data.params["spec.tasks"]) == [{"kind": "next_item"}]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")] == \
        [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert run.data.metrics["ndcg_at_10"] == 0.25 and run.data.metrics["epoch"] == 1
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"plan", "run"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "run")} == {"run/metrics.json"}   # not mlflow/
    assert (run_dir / "mlflow" / "artifacts").is_dir()   # artifacts stay in the run directory


def test_a_failed_run_is_marked_failed_once(tmp_path):
    pytest.importorskip("mlflow")
    trackers = _trackers(tmp_path, "mlflow")
    _log_a_run(trackers, ok=False)
    trackers.finish()   # a second finish changes nothing
    _, (run,) = _mlflow_runs(tmp_path / "mlflow" / "mlflow.db", "specc")
    assert run.info.status == "FAILED"


def test_an_mlflow_server_that_cannot_be_reached_is_a_user_error(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(UserError, match="MLflow tracking at http://127.0.0.1:9"):
        open_trackers(tmp_path, Tracking(log_to=("mlflow",), uri="http://127.0.0.1:9"))


def test_an_mlflow_store_failing_later_is_reported_once_and_training_goes_on(tmp_path, capsys):
    pytest.importorskip("mlflow")
    from mlflow.exceptions import MlflowException
    trackers = _trackers(tmp_path, "mlflow")
    (logger,) = trackers.loggers
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        raise MlflowException("the server went away")
    logger.client.log_batch = failing
    _log_a_run(trackers)
    assert len(calls) == 1 and logger.failed
    assert capsys.readouterr().err.count("MLflow stopped answering (the server went away)") == 1


def test_other_ranks_write_nothing(tmp_path):
    _log_a_run(_trackers(tmp_path, "tensorboard", "mlflow", rank=1))
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
        _trackers(tmp_path, backend)


def test_bad_choices_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown log_to wandb"):
        _trackers(tmp_path, "wandb")
    with pytest.raises(UserError, match="--tracking-uri is MLflow's"):
        open_trackers(tmp_path, Tracking(log_to=("tensorboard",), uri="http://127.0.0.1:5000"))
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_overrides_the_specs_log_to(tmp_path):
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec["training"]["log_to"] = ["tensorboard", "mlflow"]
    assert open_trackers(tmp_path, Tracking(log_to=()), spec["training"]["log_to"]).loggers == []
    assert len(open_trackers(tmp_path, None, ["tensorboard"]).loggers) == 1


def test_names_and_params_fit_mlflow():
    assert mlflow_name("ndcg@10") == "ndcg_at_10" and mlflow_name("train/loss") == "train/loss"
    assert flatten({"a": {"b": [1, 2], "c": None, "d": {}}, "e": "x"}) == {"a.b": "[1, 2]", "a.c": "null",
                                                                        "a.d": "{}", "e": "x"}


@pytest.mark.slow
def test_specc_train_logs_to_tensorboard_and_mlflow(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "synth", "--out", str(data), "--train", "400", "--valid", "50"]) == 0
    assert main(["train", str(ROOT / "specs" / "sasrec.json"), "--data", str(data / "train.parquet"), "--eval",
                 str(data / "valid.parquet"), "--out", str(run), "--epochs", "2", "--batch-size", "16",
                 "--log-to", "tensorboard", "mlflow", "--quiet"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = log[-1]["step"]   # 2 epochs of 25 batches
    events = _events(run / "tensorboard")
    assert [e.step for e in events.Scalars("train/loss")] == list(range(10, steps + 1, 10))
    assert [e.step for e in events.Scalars("epoch/ndcg@10")] == [r["step"] for r in log]
    client, (mlrun,) = _mlflow_runs(run / "mlflow" / "mlflow.db", "sasrec")
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["spec.body.architecture"] == "native" and mlrun.data.params["settings.epochs"] == "2"
    assert mlrun.data.metrics["ndcg_at_10"] == pytest.approx(log[-1]["ndcg@10"])
    assert len(client.get_metric_history(mlrun.info.run_id, "ndcg_at_10")) == 2
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id, "run")}
    assert {"run/metrics.json", "run/log.jsonl", "run/spec.json", "run/checkpoint.json"} <= artifacts
    assert [a.path for a in client.list_artifacts(mlrun.info.run_id, "plan")] == ["plan/plan.json"]
    # the kept weights' numbers, as metrics.json has them
    final = json.loads((run / "metrics.json").read_text())
    assert mlrun.data.metrics["final/ndcg_at_10"] == pytest.approx(final["ndcg@10"])
    assert mlrun.data.metrics["final/kept_epoch"] == final["kept_epoch"] == 2
    assert events.Scalars("final/ndcg@10")[0].value == pytest.approx(final["ndcg@10"])


def test_a_resumed_training_continues_its_mlflow_run_and_a_local_store_keeps_artifacts_beside_it(
        tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    data, run, store = tmp_path / "data", tmp_path / "run", tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    assert main(["data", "synth", "--out", str(data), "--train", "200", "--valid", "40"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    args = ["train", str(ROOT / "specs" / "sasrec.json"), "--data", str(data / "train.parquet"), "--eval",
            str(data / "valid.parquet"), "--out", str(run), "--batch-size", "32", "--log-to", "mlflow",
            "--tracking-uri", f"sqlite:///{store}", "--quiet"]
    assert main(args + ["--epochs", "1"]) == 0
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    client, runs = _mlflow_runs(store, "sasrec")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "ndcg_at_10")) == 2   # epoch 1, then epoch 2
    assert list((tmp_path / "elsewhere").iterdir()) == []                          # no ./mlruns
    assert (tmp_path / "store" / "artifacts").is_dir()
    assert runs[0].data.params["settings.epochs"] == "1" and runs[0].data.tags["resumed.settings.epochs"] == "2"
