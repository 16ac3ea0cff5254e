"""Experiment tracking with the standard tools: one small protocol, one short class per backend, rank 0 only.

    log_config(config)       once, before training: the spec and the run's settings (a nested dict)
    log(metrics, step)       every `log_every` steps ({"train/loss", "train/lr"}) and every epoch ({"epoch",
                             "loss", "seconds", "sessions_per_s", and the validation metrics}); see specc/loop.py
    close(ok=True)           once, after metrics.json is written (ok=False: the run failed)

The run directory's own log.jsonl is written by specc/run_dir.py. Backends, chosen by `training.log_to` or
`specc train --log-to`:
  tensorboard  event files under RUN_DIR/tensorboard; extra specc[tensorboard]
  mlflow       a run in RUN_DIR/mlflow/mlflow.db (a local SQLite store, artifacts beside it), or on the server or
               store --tracking-uri names; the spec as params, the plan and the run's files as artifacts;
               extra specc[mlflow]
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from specc.errors import UserError

BACKENDS = ("tensorboard", "mlflow")


class MetricLogger(Protocol):
    def log_config(self, config: dict) -> None: ...
    def log(self, metrics: dict, step: int) -> None: ...
    def close(self, ok: bool = True) -> None: ...


def _numbers(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


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


@dataclass(frozen=True)
class Tracking:
    """What `specc train --log-to/--tracking-uri` asked; log_to None: the spec's training.log_to."""
    log_to: tuple[str, ...] | None = None
    uri: str | None = None


class Trackers:
    """The chosen backends, as one logger for the training loop. The loop's close() at the end of training leaves
    them open; `finish(ok)` closes them once the run directory is complete (metrics.json written)."""

    def __init__(self, loggers: list):
        self.loggers = loggers

    def log_config(self, config: dict) -> None:
        for logger in self.loggers:
            logger.log_config(config)

    def log(self, metrics: dict, step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def close(self) -> None:
        pass

    def finish(self, ok: bool = True) -> None:
        loggers, self.loggers = self.loggers, []   # once, even if a failure follows a success
        for logger in loggers:
            logger.close(ok)


def open_trackers(run_dir, tracking: Tracking | None, spec_log_to=(), experiment: str = "specc",
                  rank: int | None = None) -> Trackers:
    """The backends `tracking` (else the spec's log_to) names; none on ranks other than 0 (torchrun's RANK)."""
    tracking = tracking or Tracking()
    log_to = tuple(spec_log_to if tracking.log_to is None else tracking.log_to)
    unknown = [name for name in log_to if name not in BACKENDS]
    if unknown:
        raise UserError(f"unknown log_to {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if tracking.uri and "mlflow" not in log_to:
        raise UserError("--tracking-uri is MLflow's: add --log-to mlflow (or \"log_to\": [\"mlflow\"] in the spec)")
    if (int(os.environ.get("RANK", "0")) if rank is None else rank) != 0:
        return Trackers([])
    loggers: list = []
    if "tensorboard" in log_to:
        loggers.append(TensorBoardLogger(run_dir))
    if "mlflow" in log_to:
        loggers.append(MlflowLogger(run_dir, experiment, tracking.uri))
    return Trackers(loggers)
