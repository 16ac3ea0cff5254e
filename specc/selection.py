"""Model selection by validation: which evaluation is the best so far, and when to stop (`training.early_stopping`).

Pure bookkeeping over the evaluations; a resumed run replays it from log.jsonl, so it selects as an uninterrupted
run would."""
from __future__ import annotations

from dataclasses import dataclass, field

LOWER_IS_BETTER = ("rmse", "mae", "loss")
# the fields of a log.jsonl epoch record that are not evaluation metrics (specc.loop.Position.finish_epoch, and the
# world size every line carries)
NOT_METRICS = ("epoch", "step", "loss", "seconds", "sessions_per_s", "world_size")


def metric_mode(metric: str) -> str:
    """"min" for error metrics (`rmse`, `<task>/mae`, ...), "max" for the rest."""
    return "min" if metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER else "max"


@dataclass
class Selection:
    metric: str
    mode: str                       # "max" or "min"
    patience: int
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    bad_evaluations: int = 0        # evaluations since the best one
    best_metrics: dict = field(default_factory=dict)   # the whole evaluation of the best epoch

    @classmethod
    def from_spec(cls, early_stopping) -> "Selection | None":
        if early_stopping is None:
            return None
        es = early_stopping
        return cls(es.metric, es.mode or metric_mode(es.metric), es.patience, es.min_delta)

    def replay(self, records: list[dict]) -> None:
        """Rebuild the selection of a resumed run from its logged epoch records (derivable, so never stored)."""
        for record in records:
            if self.metric in record:
                self.update({k: v for k, v in record.items() if k not in NOT_METRICS}, record["epoch"])

    def update(self, metrics: dict, epoch: int) -> bool:
        """Record an evaluation after `epoch`; True when it is the best so far."""
        value = metrics[self.metric]
        if value is None or value != value:   # NaN (null in log.jsonl): no evaluation rows
            self.bad_evaluations += 1
            return False
        better = self.best is None or (value > self.best + self.min_delta if self.mode == "max"
                                       else value < self.best - self.min_delta)
        if better:
            self.best, self.best_epoch, self.bad_evaluations = float(value), epoch, 0
            self.best_metrics = dict(metrics)
        else:
            self.bad_evaluations += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad_evaluations >= self.patience

    def summary(self) -> dict:
        """What metrics.json says of the selection."""
        return {"selected_by": self.metric, "best_epoch": self.best_epoch if self.best is not None else None,
                f"best_{self.metric}": self.best}

    def pointer_fields(self) -> dict:
        """What best.json records of the kept checkpoint beside its pointer."""
        return {"selected_by": self.metric, "mode": self.mode, "value": self.best, "metrics": self.best_metrics}
