"""Experiment tracking: one small protocol, one short class per backend, written by rank 0 only.

    log_config(config)       once, before training: the spec and the run's settings (a nested dict)
    log(metrics, step)       every step ({"train/loss", "train/lr"}) and every epoch ({"epoch", "loss", ...})
    close(ok=True)           once, at the end (ok=False: the run failed)

Backends, chosen by `training.log_to` or `specc train --log-to`:
  jsonl        always on: RUN_DIR/log.jsonl (a line per epoch record) and RUN_DIR/steps.jsonl (per step)
  tensorboard  event files under RUN_DIR/tensorboard (`tensorboard --logdir RUN_DIR/tensorboard`); extra specc[tensorboard]
  mlflow       a run in RUN_DIR/mlflow/mlflow.db (a local SQLite store, artifacts beside it), or on the server
               --tracking-uri names, with the spec as params and the plan and run files as artifacts; extra specc[mlflow]
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Protocol

from specc.errors import UserError

BACKENDS = ("tensorboard", "mlflow")


class MetricLogger(Protocol):
    def log_config(self, config: dict) -> None: ...
    def log(self, metrics: dict, step: int) -> None: ...
    def close(self, ok: bool = True) -> None: ...


def _json_line(record: dict) -> str:
    """JSON without NaN/Infinity, which are not JSON: an undefined metric (AUC of one class) is null."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()},
                      allow_nan=False)


def _numbers(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class JsonlLogger:
    """Epoch records (those with an "epoch" key) to RUN_DIR/log.jsonl, step records to RUN_DIR/steps.jsonl."""

    def __init__(self, run_dir):
        self.epochs = Path(run_dir) / "log.jsonl"
        self.steps = Path(run_dir) / "steps.jsonl"

    def log_config(self, config: dict) -> None:
        pass   # the run directory holds the spec and the plan already

    def log(self, metrics: dict, step: int) -> None:
        with open(self.epochs if "epoch" in metrics else self.steps, "a") as f:
            f.write(_json_line({**metrics, "step": step}) + "\n")

    def close(self, ok: bool = True) -> None:
        pass


class TensorBoardLogger:
    """Scalars under RUN_DIR/tensorboard: per step train/*, per epoch epoch/* (loss, throughput, eval metrics)."""

    def __init__(self, run_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("log_to tensorboard needs the tensorboard extra: pip install 'specc[tensorboard]'") \
                from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log_config(self, config: dict) -> None:
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def log(self, metrics: dict, step: int) -> None:
        epoch = "epoch" in metrics
        for name, value in _numbers(metrics).items():
            self.writer.add_scalar(name if "/" in name or not epoch else f"epoch/{name}", value, step)

    def close(self, ok: bool = True) -> None:
        self.writer.close()


def mlflow_name(name: str) -> str:
    """MLflow names allow letters, digits, _ - . space : and /; "ndcg@10" becomes "ndcg_at_10"."""
    return "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in name.replace("@", "_at_"))


def flatten(config: dict, prefix: str = "") -> dict:
    """{"body": {"d_model": 64}} -> {"body.d_model": "64"}; lists as JSON."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


class MlflowLogger:
    """One MLflow run in the experiment named like the spec; at close the plan and the run's files as artifacts."""

    def __init__(self, run_dir, experiment: str, tracking_uri: str | None = None):
        try:
            import logging

            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError("log_to mlflow needs the mlflow extra: pip install 'specc[mlflow]'") from None
        self.run_dir = Path(run_dir)
        local = self.run_dir.resolve() / "mlflow"
        if tracking_uri is None:
            local.mkdir(parents=True, exist_ok=True)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)   # no schema-migration chatter
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=tracking_uri or f"sqlite:///{local / 'mlflow.db'}")
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=None if tracking_uri else (local / "artifacts").as_uri())
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_dir.name).info.run_id

    def log_config(self, config: dict) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH
        params = [Param(mlflow_name(k), v[:MAX_PARAM_VAL_LENGTH]) for k, v in flatten(config).items()]
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(mlflow_name(k), v, now, step)
                                                    for k, v in _numbers(metrics).items()])

    def close(self, ok: bool = True) -> None:
        for path in sorted(self.run_dir.iterdir()):   # the run's own files; not the trackers' folders
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path), "plan" if path.name == "plan.json" else "run")
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


class Loggers:
    """Every chosen backend, each receiving every call; on ranks other than 0, none."""

    def __init__(self, loggers: list):
        self.loggers = loggers

    def log_config(self, config: dict) -> None:
        for logger in self.loggers:
            logger.log_config(config)

    def log(self, metrics: dict, step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def close(self, ok: bool = True) -> None:
        for logger in self.loggers:
            logger.close(ok)


def open_loggers(run_dir, log_to=(), experiment: str = "specc", tracking_uri: str | None = None,
                 rank: int = 0) -> Loggers:
    """The jsonl logger and those `log_to` names ("tensorboard", "mlflow"); nothing on ranks other than 0."""
    unknown = [name for name in log_to if name not in BACKENDS]
    if unknown:
        raise UserError(f"unknown log_to {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if rank != 0:
        return Loggers([])
    loggers: list = [JsonlLogger(run_dir)]
    if "tensorboard" in log_to:
        loggers.append(TensorBoardLogger(run_dir))
    if "mlflow" in log_to:
        loggers.append(MlflowLogger(run_dir, experiment, tracking_uri))
    return Loggers(loggers)
