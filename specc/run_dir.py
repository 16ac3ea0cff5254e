"""The run directory a training run writes (`--out`), and resuming from it. The files are described in
`specc/checkpoint.py`, which also loads the trained model."""
from __future__ import annotations

import json
from pathlib import Path

from specc.checkpoint import (RunError, check_same_plan, load_train_state, load_weights, save_model_files,
                              save_train_state, saved_settings)
from specc.files import atomic_write_text, json_text


class RunDirectory:
    """`with RunDirectory(out, resume) as run:` checks that `out` may be written (a new or empty folder, or a
    run to resume); a folder this created is removed again if the run fails before writing anything to it.
    In a distributed run only one process writes (`writer`, rank 0); the others check and read the same folder."""

    def __init__(self, path, resume: bool = False, writer: bool = True):
        self.path = Path(path)
        self.resume, self.writer = resume, writer
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path} is a file, not a run directory")
        if self.path.exists() and not resume and any(self.path.iterdir()):
            if (self.path / "train_state.json").is_file():
                raise RunError(f"{self.path} already holds a run; pass --resume to continue it or choose another "
                               "--out")
            raise RunError(f"{self.path} is not empty; choose a new or empty folder for the run")
        if resume and not (self.path / "train_state.json").is_file():
            raise RunError(f"{self.path}: nothing to resume (no train_state.json)")
        self._created = False
        self._saved = saved_settings(self.path) if resume else {}

    def __enter__(self):
        self._created = self.writer and not self.path.exists()
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)   # fail now, not after an epoch, if it cannot be written
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and self._created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()
        return False

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------------------------------- resuming

    def settings(self, asked: dict) -> dict:
        """The settings a run continues with: for a new run, those asked; for a resumed run its saved ones (a flag
        that differs is an error, except a larger epoch count)."""
        if not self.resume:
            return dict(asked)
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

    def saved_world_size(self) -> int:
        return int(self._saved.get("world_size") or 1)

    def restore(self, plan, model, optimizer, scheduler, generator) -> dict:
        """Weights, optimizer, schedule and RNG state of the last checkpoint; returns the saved position."""
        check_same_plan(self.path, plan)
        position = load_train_state(self.path, optimizer, scheduler, generator)
        load_weights(self.path, model)
        return position

    # ------------------------------------------------------------------------------------------- writing

    def save(self, model, spec_dict: dict, schema, optimizer, scheduler, generator, position: dict,
             settings: dict) -> str:
        if self.writer:
            save_model_files(self.path, model, spec_dict, schema)
            save_train_state(self.path, optimizer, scheduler, generator, position, settings)
        return str(self.path)

    def metrics(self) -> dict | None:
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_metrics(self, result: dict) -> None:
        if self.writer:
            atomic_write_text(self.path / "metrics.json", json_text(result, indent=2) + "\n")

    def epoch_log(self, **fields) -> list:
        """The loggers of log.jsonl (none where this process does not write); `fields` go into every line."""
        return [JsonlLogger(self.path / "log.jsonl", fields)] if self.writer else []


class JsonlLogger:
    """log.jsonl: one JSON line per epoch record (records with an "epoch" key); step records are not kept."""

    def __init__(self, path: Path, fields: dict | None = None):
        self.path, self.fields = path, dict(fields or {})

    def log(self, metrics: dict, step: int) -> None:
        if "epoch" in metrics:
            with open(self.path, "a") as f:
                f.write(json_text({**metrics, "step": step, **self.fields}) + "\n")

    def close(self) -> None:
        pass
