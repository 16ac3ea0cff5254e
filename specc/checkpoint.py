"""Run directories: weights in safetensors, the spec, the plan and the schema as JSON. Never pickle.

RUN_DIR/
  model.safetensors   model weights
  spec.json           the spec as trained (with its effective schema path dropped)
  plan.json           the compiled plan; loading recompiles the spec and checks it matches
  columns.json        the schema view the model was compiled against (no merlin needed to load)
  train_state.safetensors + train_state.json   optimizer, scheduler and RNG state for --resume
  metrics.json, log.jsonl
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from specc.errors import UserError
from specc.files import atomic_write_text
from specc.schema import Schema


class RunError(UserError):
    """A run directory that is missing, incomplete or does not match its plan."""


def save_model_files(run_dir: Path, model, spec_dict: dict, schema: Schema) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "spec.json", json.dumps(spec_dict, indent=2))
    atomic_write_text(run_dir / "plan.json", model.plan.to_json())
    atomic_write_text(run_dir / "columns.json", json.dumps({"source": schema.source, "columns": schema.to_columns()},
                                                       indent=2))
    tmp = run_dir / "model.safetensors.tmp"
    save_model(model, str(tmp), metadata={"format": "specc-1"})
    tmp.replace(run_dir / "model.safetensors")


def save_train_state(run_dir: Path, optimizer, scheduler, generator: torch.Generator, position: dict,
                     settings: dict) -> None:
    """Everything --resume needs to continue exactly where an uninterrupted run would be: the position (the epoch
    in progress, 0-based, the batches of it already trained, the optimizer step, the running loss sums), the
    optimizer, schedule and RNG state, and the settings it ran with (epochs, batch_size, lr, precision, data)."""
    opt = optimizer.state_dict()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.model": generator.get_state()}
    scalars = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    save_file(tensors, str(run_dir / "train_state.safetensors"))
    atomic_write_text(run_dir / "train_state.json", json.dumps({
        **position, "settings": settings, "param_groups": opt["param_groups"],
        "scalars": scalars,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}}, indent=2))


def saved_settings(run_dir: Path) -> dict:
    return _train_meta(run_dir).get("settings") or {}


def _train_meta(run_dir: Path) -> dict:
    try:
        meta = json.loads((run_dir / "train_state.json").read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{run_dir}/train_state.json cannot be read ({exc}); the run cannot be resumed") from None
    if not isinstance(meta, dict):
        raise RunError(f"{run_dir}/train_state.json is not a training state; the run cannot be resumed")
    return meta


def load_train_state(run_dir: Path, optimizer, scheduler, generator: torch.Generator) -> dict:
    """Restores the optimizer, schedule and RNG state; returns the saved position."""
    meta = _train_meta(run_dir)
    try:
        tensors = load_file(str(run_dir / "train_state.safetensors"))
    except Exception as exc:   # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise RunError(f"{run_dir}/train_state.safetensors cannot be read ({type(exc).__name__}: {exc}); "
                       "the run cannot be resumed") from None
    try:
        return _restore(meta, tensors, optimizer, scheduler, generator)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise RunError(f"{run_dir}: damaged training state ({type(exc).__name__}: {str(exc)[:200]}); the run "
                       "cannot be resumed") from None


_STATE_KEYS = ("settings", "param_groups", "scalars", "scheduler")


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


def load(run_dir, device: str | None = None, kernels: str = "auto"):
    """The trained model of a run directory, in eval mode. Checks the recompiled plan matches the saved one."""
    from specc.builder import build_from_plan
    from specc.check import compile as compile_plan
    run_dir = Path(run_dir)
    needed = ["model.safetensors", "spec.json", "plan.json", "columns.json"]
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    missing = [n for n in needed if not (run_dir / n).is_file()]
    if missing:
        raise RunError(f"{run_dir}: not a complete run directory (missing {', '.join(missing)})")
    try:
        spec = json.loads((run_dir / "spec.json").read_text())
        saved_plan = json.loads((run_dir / "plan.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{run_dir}: corrupt run files ({exc})") from None
    if not isinstance(spec, dict) or not isinstance(saved_plan, dict):
        raise RunError(f"{run_dir}: corrupt run files (spec.json and plan.json must hold JSON objects)")
    # the plan is compared with the saved one below; its body already ran when the run was trained
    plan = compile_plan(spec, run_schema(run_dir), kernels, trial_run=False)
    if _comparable(plan.to_dict()) != _comparable(saved_plan):
        raise RunError(f"{run_dir}: the spec no longer compiles to the saved plan (was it edited, or trained with "
                       "another specc version?)")
    model = build_from_plan(plan, read_vectors=False)   # pretrained vectors are among the weights
    load_weights(run_dir, model)
    if device:
        model.to(device)
    return model.eval()


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                       torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}


def _check_dtypes(path: Path, model) -> None:
    """Weights of another dtype than the model's would be cast silently on load."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    except Exception as exc:   # noqa: BLE001 - safetensors raises several types for damaged files
        raise RunError(f"{path}: cannot load weights ({exc})") from None
    wrong = [f"{k} is {stored[k]}, the model's {_SAFETENSORS_DTYPES.get(t.dtype, t.dtype)}"
             for k, t in model.state_dict().items() if k in stored and stored[k] != _SAFETENSORS_DTYPES.get(t.dtype)]
    if wrong:
        raise RunError(f"{path} does not match the plan: {'; '.join(wrong[:3])}")


def load_weights(run_dir: Path, model) -> None:
    """RUN_DIR/model.safetensors into `model`: every tensor present, of the model's shape and dtype, finite."""
    path = run_dir / "model.safetensors"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a complete run directory (missing model.safetensors)")
    _check_dtypes(path, model)
    try:
        missing_keys, unexpected = load_model(model, str(path), strict=False)
    except Exception as exc:   # safetensors raises several types for damaged files
        raise RunError(f"{path}: cannot load weights ({exc})") from None
    if missing_keys or unexpected:
        raise RunError(f"{path} does not match the plan (missing {sorted(missing_keys)[:3]}, "
                       f"unexpected {sorted(unexpected)[:3]})")
    broken = [name for name, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if broken:
        raise RunError(f"{path} holds NaN or infinite weights ({', '.join(broken[:3])}"
                       f"{' ...' if len(broken) > 3 else ''}); its scores would be meaningless")


def run_schema(run_dir) -> Schema:
    """The schema view a run was compiled against (RUN_DIR/columns.json)."""
    path = Path(run_dir) / "columns.json"
    try:
        columns = json.loads(path.read_text())
        return Schema.from_columns(columns["columns"], source=columns.get("source"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise RunError(f"{path}: missing or corrupt ({exc})") from None


def check_same_plan(run_dir: Path, plan) -> None:
    """Resuming must continue the same model: the spec has to compile to the plan the run was trained with."""
    try:
        saved = json.loads((run_dir / "plan.json").read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{run_dir}/plan.json cannot be read ({exc})") from None
    if not isinstance(saved, dict) or _comparable(plan.to_dict()) != _comparable(saved):
        raise RunError(f"{run_dir} was trained from another spec or schema; resume it with its own spec "
                       f"({run_dir / 'spec.json'})")


def _comparable(plan: dict) -> dict:
    return {k: v for k, v in plan.items() if k not in ("kernels", "schema_source")}

