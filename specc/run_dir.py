"""The run directory a training run writes (`--out`), as a transaction (layout: `specc/checkpoint.py`; promises:
docs/guarantees.md).

One writer holds its lock (`specc/lock.py`). A checkpoint (weights, optimizer/schedule/RNG state, position) is
written into a temporary folder, fsynced, renamed to `checkpoints/step-N/`, and published by rewriting the pointer
`checkpoint.json` last; older checkpoints are then removed. Resuming proves that the weights and the state belong
together: the pointer's checksums and the step each file records."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import save_model

from specc.checkpoint import (CHECKPOINTS, POINTER, WEIGHTS, RunError, check_same_plan, file_mode, load_weights,
                              published, run_json, sha256_file, verify_file)
from specc.files import RUN_FILE_LIMIT, UnreadableFile, atomic_write_text, fsync_file, fsync_folder, json_text, read_text
from specc.lock import LOCK_NAME, RunLock, describe, refuse_inside_run
from specc.loop import Position
from specc.train_state import META, TENSORS, load_train_state, save_train_state, saved_settings

_IDENTITY = ("spec.json", "plan.json", "columns.json")
_OURS = {LOCK_NAME, POINTER, CHECKPOINTS, "metrics.json", "log.jsonl", *_IDENTITY}   # what a run directory holds


def _ours(names: set[str]) -> bool:
    """Only names a run directory holds (or their temporary files)."""
    return all(name.removesuffix(".tmp") in _OURS for name in names)


class RunDirectory:
    """`with RunDirectory(out, resume) as run:` locks `out` and checks that it may be written: a new folder, an
    empty one, the leftovers of a run that never published a checkpoint, or (with `resume`) a run. If the command
    fails before publishing a checkpoint, what it wrote is removed again."""

    def __init__(self, path, resume: bool = False, say=print):
        self.path = Path(path)
        self.resume = resume
        self.say = say
        self.pointer: dict | None = None
        self._lock = RunLock(self.path)
        self._created = False
        self._fresh = False   # checked to be free for a new run: what this command writes there may be removed
        self._identity: dict[str, str] = {}
        self._saved: dict = {}

    def __enter__(self):
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path} is a file, not a run directory")
        refuse_inside_run(self.path, itself=False)
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
                _remove(self.path / name)
            self._fresh = True
            return
        if not has_run:
            raise RunError(f"{self.path}: nothing to resume (no published checkpoint; the run stopped before its "
                           "first one). Start it again without --resume: the folder can be reused")
        self.pointer = published(self.path)
        self._prune()
        self._saved = saved_settings(self.pointer["path"])

    def __exit__(self, kind, exc, tb):
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
                _remove(self.path / name)
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
                raise RunError(f"{self.path} was trained with {flag} {value}; resuming with {asked[key]} would not "
                               f"continue the same run (leave {flag} out, or start a new run)")
        return out

    def saved_epochs(self) -> int | None:
        return self._saved.get("epochs")

    def restore(self, plan, model, optimizer, scheduler, generator, steps_per_epoch: int) -> Position:
        """Weights, optimizer, schedule and RNG state of the published checkpoint, once it is proven whole: every
        file has its recorded checksum and records the same step. Returns the saved position."""
        check_same_plan(self.path, plan)
        pointer, folder = self.pointer, self.pointer["path"]
        for name in (TENSORS, META):
            verify_file(folder / name, pointer)
        position = load_train_state(folder, optimizer, scheduler, generator)
        load_weights(pointer, model)
        return _checked_position(position, pointer["step"], steps_per_epoch, folder)

    def unlogged_epoch(self, position: Position) -> bool:
        """Drops log.jsonl records of epochs after the checkpoint (they will be trained again) and torn lines; True
        when the epoch the checkpoint ends has no record yet (the run stopped before logging it)."""
        path = self.path / "log.jsonl"
        try:
            lines = read_text(path, limit=RUN_FILE_LIMIT, what="training log").splitlines() if path.exists() else []
        except UnreadableFile as exc:
            raise RunError(f"{exc}; move it away to resume") from None
        kept = {}
        for line in lines:
            record = _record(line)
            if record is not None and type(record.get("epoch")) is int and record["epoch"] <= position.epoch:
                kept[line] = record["epoch"]
        if list(kept) != lines:
            atomic_write_text(path, "".join(line + "\n" for line in kept), durable=True)
        return position.batch == 0 and position.epoch > 0 and position.epoch not in kept.values()

    # ------------------------------------------------------------------------------------------- writing

    def describe(self, spec_dict: dict, plan, schema) -> None:
        """What the model is: written with the first checkpoint (spec.json, plan.json, columns.json)."""
        self._identity = {"spec.json": json_text(spec_dict, indent=2), "plan.json": plan.to_json(),
                          "columns.json": json_text({"source": schema.source, "columns": schema.to_columns()},
                                                    indent=2)}

    def save(self, model, optimizer, scheduler, generator, position: dict, settings: dict) -> str:
        """Write and publish a checkpoint; on failure (a full disk) the last published one is left as it was."""
        step = position["step"]
        folder = self.path / CHECKPOINTS
        name = _free_name(folder, f"step-{step:09d}")
        tmp, final = folder / f".tmp-{name}", folder / name
        try:
            folder.mkdir(exist_ok=True)
            tmp.mkdir()
            save_model(model, str(tmp / WEIGHTS), metadata={"format": "specc-1", "step": str(step)})
            save_train_state(tmp, optimizer, scheduler, generator, position, settings)
            sums = {}
            for part in (WEIGHTS, TENSORS, META):
                os.chmod(tmp / part, file_mode())
                fsync_file(tmp / part)
                sums[part] = sha256_file(tmp / part)
            fsync_folder(tmp)
            tmp.rename(final)
            fsync_folder(folder)
            if self.pointer is None and not self.resume:
                for file, text in self._identity.items():
                    atomic_write_text(self.path / file, text, durable=True)
            atomic_write_text(self.path / POINTER, json_text(
                {"format": "specc-checkpoint-1", "checkpoint": f"{CHECKPOINTS}/{name}", "step": step,
                 "epoch": position["epoch"], "batch": position["batch"], "sha256": sums}, indent=2), durable=True)
        except (OSError, SafetensorError) as exc:
            _remove(tmp)
            if not _names(self.path, final):
                _remove(final)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)[:200]
            kept = (f"the checkpoint of step {self.pointer['step']} is intact: free space and continue with --resume"
                    if self.pointer else "nothing was saved: free space and start again (the folder can be reused)")
            raise RunError(f"cannot write the checkpoint of step {step} in {self.path} ({reason}); {kept}") from None
        self.pointer = published(self.path)
        self._prune()
        return f"{self.path} (step {step})"

    def _prune(self) -> None:
        """Remove every checkpoint but the published one, and temporary files a killed writer left."""
        keep = self.pointer["path"].name
        for entry in (self.path / CHECKPOINTS).iterdir() if (self.path / CHECKPOINTS).is_dir() else ():
            if entry.name != keep:
                _remove(entry)
        for entry in self.path.glob("*.tmp"):
            _remove(entry)

    def metrics(self) -> dict | None:
        """metrics.json, if it is there and readable."""
        try:
            return run_json(self.path / "metrics.json", "metrics") if (self.path / "metrics.json").exists() else None
        except RunError:
            return None

    def write_metrics(self, result: dict) -> None:
        atomic_write_text(self.path / "metrics.json", json_text(result, indent=2) + "\n", durable=True)

    def epoch_log(self) -> "JsonlLogger":
        return JsonlLogger(self.path / "log.jsonl")


class JsonlLogger:
    """log.jsonl: one JSON line per epoch record (records with an "epoch" key); step records are not kept."""

    def __init__(self, path: Path):
        self.path = path

    def log(self, metrics: dict, step: int) -> None:
        if "epoch" in metrics:
            with open(self.path, "a") as f:
                f.write(json_text({**metrics, "step": step}) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def close(self) -> None:
        pass


def _record(line: str) -> dict | None:
    """A log.jsonl line as a record; None for a line torn by a kill."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _names(run_dir: Path, folder: Path) -> bool:
    """Whether the pointer on disk names `folder`."""
    try:
        return published(run_dir)["path"] == folder
    except RunError:
        return False


def _checked_position(saved: dict, step: int, steps_per_epoch: int, folder: Path) -> Position:
    """The saved position, if it is one this run can be at: the checkpoint's step, reached by whole epochs of
    `steps_per_epoch` batches plus the batches of the epoch in progress."""
    try:
        position = Position(**saved)
    except TypeError as exc:
        raise RunError(f"{folder / META}: damaged training state ({exc}); the run cannot be resumed") from None
    counts = (position.epoch, position.batch, position.step, position.sessions, position.train_sessions)
    sums = (position.loss_sum, position.seconds, position.train_seconds)
    if (not all(type(v) is int and v >= 0 for v in counts) or not all(type(v) in (int, float) and v >= 0 for v in sums)
            or not isinstance(position.finished, dict)):
        raise RunError(f"{folder / META}: damaged training state (counts and sums must be non-negative numbers); "
                       "the run cannot be resumed")
    if position.step != step:
        raise RunError(f"{folder}: the training state is of step {position.step}, the weights of step {step}; they "
                       "do not belong together and the run cannot be resumed")
    if position.batch > steps_per_epoch or position.step != position.epoch * steps_per_epoch + position.batch:
        raise RunError(f"{folder}: the training state (epoch {position.epoch + 1}, batch {position.batch}, step "
                       f"{position.step}) does not fit the data's {steps_per_epoch} batches per epoch: the data or "
                       "the state changed since the checkpoint, and resuming would not continue the same run")
    return position


def _free_name(folder: Path, name: str) -> str:
    taken = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    count = 1
    candidate = name
    while candidate in taken or f".tmp-{candidate}" in taken:
        count += 1
        candidate = f"{name}-{count}"
    return candidate


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
