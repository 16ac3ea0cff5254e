"""The training loop: epochs of optimizer steps over the training data, composing what it is given.

It knows nothing of run directories or the command line: it calls `hooks.save` to checkpoint, `hooks.evaluate`
for metrics, `hooks.keep_best` when the selection finds a new best epoch, `hooks.out_of_time` for a time budget,
and every logger in `hooks.loggers` with each record. A logger is any object with
`log(metrics: dict, step: int)` and `close()`; it gets one record per epoch (with an "epoch" key: loss, seconds,
sessions/s and the evaluation metrics) and one per `log_every` steps (`train/loss`, `train/lr`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from specc.errors import UserError
from specc.progress import progress_bar


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class Position:
    """Where training stands; saved with every checkpoint, so a resumed run continues as if never stopped."""
    epoch: int = 0              # the epoch in progress, 0-based (= epochs when training is done)
    batch: int = 0              # batches of it already trained
    step: int = 0               # optimizer steps taken
    loss_sum: float = 0.0       # of the epoch in progress: sum of loss x sessions, the sessions, the seconds
    sessions: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0  # over all epochs
    train_sessions: int = 0
    finished: dict = field(default_factory=dict)   # the last finished epoch's record, before evaluation

    @property
    def loss(self) -> float:
        return self.loss_sum / self.sessions if self.sessions else float("nan")

    def to_dict(self) -> dict:
        return asdict(self)

    def finish_epoch(self) -> dict:
        """Close the epoch in progress; returns its record."""
        self.finished = {"epoch": self.epoch + 1, "step": self.step, "loss": self.loss,
                         "seconds": round(self.seconds, 3),
                         "sessions_per_s": round(self.sessions / max(self.seconds, 1e-9), 1)}
        self.train_seconds += self.seconds
        self.train_sessions += self.sessions
        self.epoch, self.batch, self.loss_sum, self.sessions, self.seconds = self.epoch + 1, 0, 0.0, 0, 0.0
        return dict(self.finished)


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    steps_per_epoch: int
    seed: int
    lr: float
    clip_grad_norm: float | None = None
    bf16: bool = False
    device: str = "cpu"
    eval_every: int = 1
    checkpoint_every: int | None = None   # steps; besides the checkpoint at the end of every epoch
    progress: bool = False
    log_every: int = 10
    world_size: int = 1           # processes, each taking batch_size rows per step (the global batch over them)


@dataclass
class Hooks:
    save: Callable[[Position], str]          # writes a checkpoint; returns where, for messages
    evaluate: Callable[[], dict] | None = None
    loggers: list = field(default_factory=list)
    say: Callable[[str], None] = print
    saved: str | None = None                 # the checkpoint training started from, if any
    selection: object | None = None         # a specc.selection.Selection: stop when it says so
    keep_best: Callable[[], None] = lambda: None   # keeps the checkpoint just evaluated: the selection's new best
    out_of_time: Callable[[], bool] | None = None  # a time budget (--max-time): stop once it says it is spent
    # over every process of a distributed run: whether any asks to stop, and the sum of per-process sums
    agree: Callable[[bool], bool] = bool
    total: Callable[[dict], dict] = dict


def train_loop(model, data, optimizer, scheduler, settings: LoopSettings, position: Position, hooks: Hooks) -> dict:
    """Train from `position` to the end of the last epoch, or until early stopping, the time budget or
    Ctrl-C/SIGTERM (then save and stop). Returns why it stopped ("epochs", "early_stopping", "max_time",
    "interrupted") and the metrics of the last epoch's evaluation, if the last weights are that epoch's."""
    metrics: dict = {}
    trained = False   # an epoch in this command: a budget spent on starting up still trains a step or more
    with _StopOnInterrupt() as stop:
        while position.epoch < settings.epochs:
            if _selection_stops(hooks, position):
                return outcome(metrics, "early_stopping", position.finished.get("loss", float("nan")))
            # between epochs too (after one, at least): the next one would run past the budget by more than a step
            if trained and hooks.out_of_time and hooks.agree(hooks.out_of_time()):
                hooks.say(f"{_STOPPED['max_time']} after epoch {position.epoch}; continue with --resume")
                return outcome(metrics, "max_time", position.finished["loss"])
            stopped = _train_epoch(model, data, optimizer, scheduler, settings, position, hooks, stop)
            trained = True
            sums = hooks.total({"loss_sum": position.loss_sum, "sessions": position.sessions})
            position.loss_sum, position.sessions = sums["loss_sum"], int(round(sums["sessions"]))
            if stopped:
                where = hooks.saved = hooks.save(position)
                hooks.say(f"{_STOPPED[stopped]}: saved {where} at epoch {position.epoch + 1}, batch "
                          f"{position.batch}; continue with --resume")
                return outcome({}, stopped, position.loss)
            position.finish_epoch()
            hooks.saved = hooks.save(position)
            metrics = end_epoch(position, settings, hooks)
    return outcome(metrics, "epochs", position.finished.get("loss", float("nan")))


_STOPPED = {"interrupted": "interrupted", "max_time": "stopped at --max-time"}


def outcome(metrics: dict, stopped: str, loss: float) -> dict:
    """What a training command did: its last evaluation, why it stopped, and its last loss."""
    return {"metrics": metrics, "stopped": stopped, "interrupted": stopped == "interrupted", "loss": loss}


def end_epoch(position: Position, settings: LoopSettings, hooks: Hooks) -> dict:
    """Evaluate (when due) after the last finished epoch and log its record; returns the metrics evaluated."""
    epoch = position.finished["epoch"]
    due = hooks.evaluate is not None and (epoch % settings.eval_every == 0 or epoch == settings.epochs)
    evaluated = hooks.evaluate() if due else {}
    best = hooks.selection is not None and bool(evaluated) and hooks.selection.update(evaluated, epoch)
    record = {**position.finished, **evaluated}
    for logger in hooks.loggers:
        logger.log(record, position.step)
    if best:   # after the record: a resumed run's selection, replayed from the log, then keeps the same one
        hooks.keep_best()
    hooks.say(_epoch_line(record))
    return evaluated


def _selection_stops(hooks: Hooks, position: Position) -> bool:
    s = hooks.selection
    if s is None or not s.should_stop:
        return False
    best = f"epoch {s.best_epoch}'s {s.best:.4f}" if s.best is not None else "any value (every evaluation was NaN)"
    hooks.say(f"early stopping after epoch {position.epoch}: {s.metric} has not improved on {best} for "
              f"{s.bad_evaluations} evaluation(s)")
    return True


def _train_epoch(model, data, optimizer, scheduler, settings: LoopSettings, position: Position, hooks: Hooks,
                 stop) -> str | None:
    """One epoch (or its rest, when resumed); returns why it stopped before its end ("interrupted": a request to
    stop; "max_time": the time budget is spent), else None."""
    model.train()
    # bf16 autocast on CUDA, and on CPUs with bf16 matrix units (AVX512-BF16/AMX), where it is ~4x cheaper
    autocast = torch.autocast(settings.device.split(":")[0], dtype=torch.bfloat16, enabled=settings.bf16)
    bar = progress_bar(settings.progress, settings.steps_per_epoch, f"epoch {position.epoch + 1}/{settings.epochs}",
                    hooks.say)
    resumed_at = position.batch
    mark = time.perf_counter()
    batches = data.batches(settings.batch_size, shuffle=True, seed=settings.seed, epoch=position.epoch)
    for done, batch in enumerate(batches, start=1):
        if done <= resumed_at:   # resumed mid-epoch: these batches were trained
            continue
        batch = {c: v.to(settings.device, non_blocking=True) for c, v in batch.items()}
        with autocast:
            loss = model(batch)["loss"]
        value = loss.item()
        if not math.isfinite(value):
            kept = f"{hooks.saved} keeps its last checkpoint." if hooks.saved else "Nothing was saved."
            raise TrainingDiverged(f"the loss became {value} at epoch {position.epoch + 1}, batch {done} (step "
                                   f"{position.step + 1}): training diverged; lower the learning rate (now "
                                   f"{settings.lr:g}) or keep clip_grad_norm on. {kept}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        n = next(iter(batch.values())).shape[0]
        now = time.perf_counter()
        position.step, position.batch = position.step + 1, done
        position.loss_sum, position.sessions = position.loss_sum + value * n, position.sessions + n
        position.seconds, mark = position.seconds + now - mark, now
        if position.step % settings.log_every == 0:
            for logger in hooks.loggers:
                logger.log({"train/loss": value, "train/lr": scheduler.get_last_lr()[0]}, position.step)
        if bar is not None:   # this process's loss; sessions/s of all (the others take batches of the same size)
            rate = position.sessions * settings.world_size / max(position.seconds, 1e-9)
            bar.set_postfix(loss=f"{position.loss:.4f}", sessions_s=f"{rate:.0f}")
            bar.update(1)
        # every process stops after the same step: when any one is asked to, or finds the budget spent
        if hooks.agree(stop.requested or bool(hooks.out_of_time and hooks.out_of_time())):
            stopped = "interrupted" if hooks.agree(stop.requested) else "max_time"
            break
        if settings.checkpoint_every and position.step % settings.checkpoint_every == 0 \
                and done < settings.steps_per_epoch:
            hooks.saved = hooks.save(position)
    else:
        stopped = None
    if bar is not None:
        bar.close()
    return stopped


class _StopOnInterrupt:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current batch, so the saved state is whole."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:   # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        import signal
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _epoch_line(line: dict) -> str:
    shown = [f"epoch {line['epoch']}", f"loss {line['loss']:.4f}", f"{line['sessions_per_s']:.0f} sessions/s"]
    shown += [f"{k} {v:.4f}" for k, v in line.items() if ("@" in k or "/" in k) and isinstance(v, float)]
    return "  ".join(shown)
