"""The run directory a training run writes (`--out`), as a transaction (layout: `specc/checkpoint.py`; promises:
docs/guarantees.md).

One writer holds its lock (`specc/lock.py`). A checkpoint (weights, optimizer/schedule/RNG state, position) is
written into a temporary folder, fsynced, renamed to `checkpoints/step-N/`, and published by rewriting the pointer
`checkpoint.json` last; with early stopping the best evaluated epoch's checkpoint is also named by `best.json`, and
checkpoints that neither pointer names are then removed. Resuming proves that the weights and the state belong
together: the pointer's checksums and the step each file records."""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_model

from specc.checkpoint import BEST, CHECKPOINTS, POINTER, WEIGHTS, RunError, check_same_plan, load_weights, published, \
    run_json, verify_file
from specc.files import atomic_write_text, json_text
from specc.lock import LOCK_NAME, RunLock, describe, refuse_inside_run
from specc.loop import Position
from specc.mappings import CATEGORIES, record as record_mappings
from specc.publish import prune, publish_best, publish_checkpoint, remove
from specc.run_log import JsonlLogger, reconcile_log
from specc.train_state import META, TENSORS, checked_position, load_train_state, save_train_state, saved_settings

_IDENTITY = ("spec.json", "plan.json", "columns.json")
# what a run directory holds: its files, and what the trackers and specc report write into it
_OURS = {LOCK_NAME, POINTER, BEST, CHECKPOINTS, "metrics.json", "log.jsonl", "tensorboard", "mlflow", "report",
         CATEGORIES, *_IDENTITY}


def _ours(names: set[str]) -> bool:
    """Only names a run directory holds (or their temporary files)."""
    return all(name.removesuffix(".tmp") in _OURS for name in names)


class RunDirectory:
    """`with RunDirectory(out, resume) as run:` locks `out` and checks that it may be written: a new folder, an
    empty one, the leftovers of a run that never published a checkpoint, or (with `resume`) a run. If the command
    fails before publishing a checkpoint, what it wrote is removed again. In a distributed run only one process
    writes (`writer`, rank 0, which holds the lock); the others read the same folder."""

    def __init__(self, path, resume: bool = False, say=print, writer: bool = True):
        self.path = Path(path)
        self.resume, self.writer = resume, writer
        self.say = say
        self.pointer: dict | None = None   # the published checkpoint (the latest)
        self.best: dict | None = None      # the kept best one, with early stopping
        self._lock = RunLock(self.path)
        self._created = False
        self._fresh = False   # checked to be free for a new run: what this command writes there may be removed
        self._identity: dict[str, str] = {}
        self._saved: dict = {}

    def __enter__(self):
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path} is a file, not a run directory")
        refuse_inside_run(self.path, itself=False)
        if not self.writer:
            if self.resume:
                self._read_published()
            return self
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)   # fail now, not after an epoch, if it cannot be written
        had_lock = (self.path / LOCK_NAME).exists()
        try:
            stale = self._lock.acquire()
            if stale:
                self.say(f"note: took over the lock of {self.path} left by {describe(stale)}, which has ended")
            self._check(had_lock)
        except BaseException:
            self._undo()
            raise
        return self

    def _check(self, had_lock: bool) -> None:
        has_run = (self.path / POINTER).exists()
        if not self.resume:
            if has_run:
                raise RunError(f"{self.path} already holds a run; pass --resume to continue it or choose another "
                               "--out")
            others = {p.name for p in self.path.iterdir()} - {LOCK_NAME}
            if others and not (had_lock and _ours(others)):
                raise RunError(f"{self.path} is not empty; choose a new or empty folder for the run")
            for name in others:   # what a run that never published a checkpoint left behind
                remove(self.path / name)
            self._fresh = True
            return
        if not has_run:
            raise RunError(f"{self.path}: nothing to resume (no published checkpoint; the run stopped before its "
                           "first one). Start it again without --resume: the folder can be reused")
        self._read_published()
        prune(self.path, (self.pointer, self.best))

    def _read_published(self) -> None:
        self.pointer = published(self.path)
        self.best = published(self.path, BEST) if (self.path / BEST).exists() else None
        self._saved = saved_settings(self.pointer["path"])

    def __exit__(self, kind, exc, tb):
        if not self.writer:
            return False
        if kind is not None and self.pointer is None:
            self._undo()
        self._lock.release()
        return False

    def _undo(self) -> None:
        """Remove what this command wrote to a new run that never published a checkpoint (and the folder it
        created)."""
        if not self._fresh or self.pointer is not None or not self.path.is_dir():
            self._lock.release()
            return
        names = {p.name for p in self.path.iterdir()}
        if _ours(names):
            for name in names - {LOCK_NAME}:
                remove(self.path / name)
        self._lock.release(remove=_ours(names))
        if self._created and not any(self.path.iterdir()):
            self.path.rmdir()

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------------------------------- resuming

    def settings(self, asked: dict) -> dict:
        """The settings a run continues with: for a new run, those asked; for a resumed run its saved ones (a flag
        that differs is an error, except a larger epoch count)."""
        out = dict(asked)
        for key, value in self._saved.items():
            if asked.get(key) is None:
                out[key] = value
            elif value is not None and asked[key] != value and not (key == "epochs" and asked[key] > value):
                flag = "--" + key.replace("_", "-")
                fix = f"pass {flag} {value}" if key in _REQUIRED else f"leave {flag} out"
                raise RunError(f"{self.path} was trained {_with(flag, value)}; resuming {_with(flag, asked[key])} "
                               f"would not continue the same run ({fix}, or start a new run)")
        return out

    def saved_epochs(self) -> int | None:
        return self._saved.get("epochs")

    def saved_world_size(self) -> int:
        return int(self._saved.get("world_size") or 1)

    def stopped_inside_epoch(self) -> bool:
        """Whether the published checkpoint was taken inside an epoch (not at its end)."""
        return bool(run_json(self.pointer["path"] / META, "training state").get("batch"))

    def restore(self, plan, model, optimizer, scheduler, generator, steps_per_epoch: int) -> Position:
        """Weights, optimizer, schedule and RNG state of the published checkpoint, once it is proven whole: every
        file has its recorded checksum and records the same step. Returns the saved position."""
        check_same_plan(self.path, plan)
        pointer, folder = self.pointer, self.pointer["path"]
        for name in (TENSORS, META):
            verify_file(folder / name, pointer)
        position = load_train_state(folder, optimizer, scheduler, generator)
        load_weights(pointer, model)
        return checked_position(position, pointer["step"], steps_per_epoch, folder)

    def unlogged_epoch(self, position: Position) -> bool:
        """Drops log.jsonl records of epochs after the checkpoint (they will be trained again) and torn lines; True
        when the epoch the checkpoint ends has no record yet (the run stopped before logging it). Only the writer
        reads and mends the log."""
        return self.writer and reconcile_log(self.path / "log.jsonl", position)

    # ------------------------------------------------------------------------------------------- writing

    def describe(self, spec_dict: dict, plan, schema) -> None:
        """What the model is: written with the first checkpoint (spec.json, plan.json, columns.json)."""
        self._identity = {"spec.json": json_text(spec_dict, indent=2), "plan.json": plan.to_json(),
                          "columns.json": json_text({"source": schema.source, "columns": schema.to_columns()},
                                                    indent=2)}

    def save(self, model, optimizer, scheduler, generator, position: dict, settings: dict) -> str:
        """Write and publish a checkpoint; on failure (a full disk) the last published one is left as it was."""
        if not self.writer:
            return f"{self.path} (step {position['step']})"
        def write(folder: Path) -> None:
            save_model(model, str(folder / WEIGHTS), metadata={"format": "specc-1", "step": str(position["step"])})
            save_train_state(folder, optimizer, scheduler, generator, position, settings)
        first = self.pointer is None and not self.resume
        if first:
            record_mappings(self.path, settings["data"])
        self.pointer = publish_checkpoint(self.path, position, write, (WEIGHTS, TENSORS, META),
                                          self._identity if first else {}, self.pointer)
        prune(self.path, (self.pointer, self.best))
        return f"{self.path} (step {position['step']})"

    def keep_best(self, selection: dict) -> None:
        """Keep the published checkpoint (an epoch's end, just evaluated) as the best: best.json names it, and the
        best before it is removed."""
        if self.writer:
            self.best = publish_best(self.path, self.pointer, selection)
            prune(self.path, (self.pointer, self.best))

    def best_epoch(self) -> int | None:
        """The epoch whose checkpoint best.json names, if any."""
        return self.best["epoch"] if self.best else None

    def metrics(self) -> dict | None:
        """metrics.json, if it is there and readable."""
        return read_metrics(self.path)

    def write_metrics(self, result: dict) -> None:
        if self.writer:
            atomic_write_text(self.path / "metrics.json", json_text(result, indent=2) + "\n", durable=True)

    def epoch_log(self, **fields) -> list:
        """The loggers of log.jsonl (none where this process does not write); `fields` go into every line."""
        return [JsonlLogger(self.path / "log.jsonl", fields)] if self.writer else []


_REQUIRED = {"data"}   # settings whose flag a command line always gives


def read_metrics(run_dir) -> dict | None:
    """A run directory's metrics.json, if it is there and readable (a reader that does not need it goes on)."""
    path = Path(run_dir) / "metrics.json"
    try:
        return run_json(path, "metrics") if path.exists() else None
    except RunError:
        return None


def _with(flag: str, value) -> str:
    """How a setting reads as a flag: `with --lr 0.01`, `with --exclude-seen`, `without --exclude-seen`."""
    if isinstance(value, bool):
        return f"with {flag}" if value else f"without {flag}"
    return f"with {flag} {value}"
