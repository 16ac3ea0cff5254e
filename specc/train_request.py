"""What a training command is asked to do: the flags of `specc train`, the keywords of `specc.train.train`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from specc.time_budget import max_time_seconds


@dataclass(frozen=True)
class TrainRequest:
    """`spec`: a path, JSON string, dict or ModelSpec; `data`/`eval_data`: training and validation parquet;
    `out`: the run directory. `epochs`, `batch_size`, `lr`, `precision`: None for the spec's (a resumed run's own).
    `max_time`: a time budget (seconds, or "90s", "15m", "2h"): the run stops cleanly when it is spent and
    `resume` continues it. `init_from`: a trained run whose weights a new run starts from (specc/warm_start.py).
    `loggers` get every metric record as well as log.jsonl (see `specc.loop`), and so do the experiment trackers
    that `tracking` (a specc.tracking.Tracking) or the spec's training.log_to name."""
    spec: object
    data: str
    out: str
    eval_data: str | None = None
    schema: object = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    precision: str | None = None
    device: str | None = None
    resume: bool = False
    exclude_seen: bool = False
    eval_every: int = 1
    max_time: float | str | None = None
    init_from: str | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    loggers: tuple = ()
    tracking: object = None

    def __post_init__(self):
        object.__setattr__(self, "max_time", max_time_seconds(self.max_time))
