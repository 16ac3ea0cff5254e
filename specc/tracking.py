"""Experiment tracking with the standard tools: one small protocol, one short class per backend, rank 0 only.

    log_config(config)       once, before training: the spec and the run's settings (a nested dict)
    log(metrics, step)       every `log_every` steps ({"train/loss", "train/lr"}) and every epoch ({"epoch",
                             "loss", "seconds", "sessions_per_s", and the validation metrics}); see specc/loop.py
    close(ok=True)           once, after metrics.json is written (ok=False: the run failed)

The run directory's own log.jsonl is written by specc/run_dir.py. Backends, chosen by `training.log_to` or
`specc train --log-to`:
  tensorboard  event files under RUN_DIR/tensorboard; extra specc[tensorboard]
  mlflow       a run in RUN_DIR/mlflow/mlflow.db (a local SQLite store, artifacts beside it), or in the server
               or store --tracking-uri names; the spec as params, the plan and the run's files as artifacts;
               extra specc[mlflow] (specc/tracking_mlflow.py)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from specc.errors import UserError

BACKENDS = ("tensorboard", "mlflow")


class MetricLogger(Protocol):
    def log_config(self, config: dict) -> None: ...
    def log(self, metrics: dict, step: int) -> None: ...
    def close(self, ok: bool = True) -> None: ...


def numbers(metrics: dict) -> dict:
    """The numeric values of a record (not the booleans)."""
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
        for name, value in numbers(metrics).items():
            self.writer.add_scalar(name if "/" in name or not epoch else f"epoch/{name}", value, step)

    def close(self, ok: bool = True) -> None:
        self.writer.close()


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
        from specc.tracking_mlflow import MlflowLogger
        loggers.append(MlflowLogger(run_dir, experiment, tracking.uri))
    return Trackers(loggers)
