"""The training state of a checkpoint: optimizer, schedule and RNG state as safetensors, and as JSON the position
(epoch, batch, step, running loss sums), the settings the run trains with, and the step the weights belong to."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from specc.checkpoint import RunError, run_json
from specc.loop import Position

TENSORS, META = "train_state.safetensors", "train_state.json"
_STATE_KEYS = ("settings", "param_groups", "scalars", "scheduler")


def save_train_state(folder: Path, optimizer, scheduler, generator: torch.Generator, position: dict,
                     settings: dict) -> None:
    """Everything --resume needs to continue exactly where an uninterrupted run would be."""
    opt = optimizer.state_dict()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.model": generator.get_state()}
    scalars = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    save_file(tensors, str(folder / TENSORS), metadata={"step": str(position["step"])})
    (folder / META).write_text(json.dumps({
        **position, "settings": settings, "param_groups": opt["param_groups"], "scalars": scalars,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}}, indent=2))


def saved_settings(folder: Path) -> dict:
    settings = run_json(folder / META, "training state").get("settings")
    if not isinstance(settings, dict):
        raise RunError(f"{folder / META} has no settings; the run cannot be resumed")
    return settings


def load_train_state(folder: Path, optimizer, scheduler, generator: torch.Generator) -> dict:
    """Restores the optimizer, schedule and RNG state; returns the saved position."""
    meta = run_json(folder / META, "training state")
    try:
        tensors = load_file(str(folder / TENSORS))
    except Exception as exc:   # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise RunError(f"{folder / TENSORS} cannot be read ({type(exc).__name__}: {exc}); "
                       "the run cannot be resumed") from None
    try:
        return _restore(meta, tensors, optimizer, scheduler, generator)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as exc:
        raise RunError(f"{folder}: damaged training state ({type(exc).__name__}: {str(exc)[:200]}); the run "
                       "cannot be resumed") from None


def _restore(meta: dict, tensors: dict, optimizer, scheduler, generator) -> dict:
    counts = meta["epoch"], meta["batch"], meta["step"]
    if not all(type(v) is int and v >= 0 for v in counts):
        raise ValueError(f"epoch, batch and step must be counts, got {counts}")
    position = {k: v for k, v in meta.items() if k not in _STATE_KEYS}
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.model"])
    return position


def checked_position(saved: dict, step: int, steps_per_epoch: int, folder: Path) -> Position:
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
