"""Run directories: what is in them, and loading the trained model of one. Weights in safetensors, the rest JSON.
Never pickle. Writing them is `specc/run_dir.py`'s job; docs/guarantees.md says what a reader can rely on.

RUN_DIR/
  spec.json           the spec as trained (with its effective schema path dropped)
  plan.json           the compiled plan; loading recompiles the spec and checks it matches
  columns.json        the schema view the model was compiled against (no merlin needed to load)
  checkpoints/step-N/ one checkpoint: model.safetensors (the weights, with their step), train_state.safetensors
                      and train_state.json (optimizer, schedule and RNG state, position, settings) for --resume
  checkpoint.json     the published checkpoint: its folder, step and the SHA-256 of each of its files; written
                      last, so it always names a whole checkpoint. --resume continues from it
  best.json           with training.early_stopping: the same for the checkpoint of the best evaluated epoch (the
                      kept weights), with its metrics; readers load it where it is there, else checkpoint.json
  metrics.json, log.jsonl, .specc.lock (the writer's pid and host)
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import torch
from safetensors.torch import load_model

from specc.errors import UserError
from specc.files import UnreadableFile, read_json
from specc.schema import Schema

POINTER = "checkpoint.json"
BEST = "best.json"
CHECKPOINTS = "checkpoints"
WEIGHTS = "model.safetensors"


class RunError(UserError):
    """A run directory that is missing, incomplete or does not match its plan."""


def run_json(path: Path, what: str):
    """A JSON object of a run directory (bounded read), or a RunError saying why not."""
    try:
        value = read_json(path, what=what)
    except UnreadableFile as exc:
        raise RunError(f"{exc}; the run directory is damaged") from None
    if not isinstance(value, dict):
        raise RunError(f"{what} {path} must hold a JSON object; the run directory is damaged")
    return value


def published(run_dir: Path, name: str = POINTER) -> dict:
    """The published checkpoint (RUN_DIR/checkpoint.json, or the pointer `name`), its folder as "path"; RunError
    when there is none."""
    if not (run_dir / name).exists():
        raise RunError(f"{run_dir}: not a complete run directory (no published checkpoint: {name} is missing)")
    pointer = run_json(run_dir / name, "checkpoint pointer")
    folder, step, sums = pointer.get("checkpoint"), pointer.get("step"), pointer.get("sha256")
    if (not isinstance(folder, str) or Path(folder).parent != Path(CHECKPOINTS) or Path(folder).name in ("", "..")
            or type(step) is not int or step < 0 or not isinstance(sums, dict)
            or not all(isinstance(v, str) for v in sums.values())):
        raise RunError(f"{run_dir / name} is damaged (it must name a folder under {CHECKPOINTS}/, a step and "
                       "checksums)")
    return {**pointer, "path": run_dir / folder}


def kept(run_dir: Path) -> dict:
    """The pointer of the weights a run keeps: the best epoch's (best.json) where the run selects by validation,
    else the latest checkpoint's. Every reader of a run directory loads these."""
    return published(run_dir, BEST if (run_dir / BEST).exists() else POINTER)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, pointer: dict) -> None:
    """`path` (a file of the published checkpoint) is a regular file with the checksum the pointer recorded."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise RunError(f"{path} is missing: the published checkpoint is incomplete") from None
    if not stat.S_ISREG(info.st_mode):
        raise RunError(f"{path} is not a regular file; the run directory is damaged")
    if sha256_file(path) != pointer["sha256"].get(path.name):
        raise RunError(f"{path} does not match the checksum of the published checkpoint (step {pointer['step']}): "
                       "it was changed or damaged after it was written")


def load(run_dir, device: str | None = None, kernels: str = "auto"):
    """The trained model of a run directory (its kept weights: see `kept`), in eval mode. Checks the recompiled plan
    matches the saved one."""
    from specc.builder import build_from_plan
    from specc.check import compile as compile_plan
    if not isinstance(run_dir, (str, os.PathLike)):
        raise RunError(f"a run directory is a path (str or os.PathLike), not {type(run_dir).__name__}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    missing = [n for n in ("spec.json", "plan.json", "columns.json") if not (run_dir / n).is_file()]
    if missing:
        raise RunError(f"{run_dir}: not a complete run directory (missing {', '.join(missing)})")
    pointer = kept(run_dir)
    spec = run_json(run_dir / "spec.json", "spec")
    # the plan is compared with the saved one below; its body already ran when the run was trained
    plan = compile_plan(spec, run_schema(run_dir), kernels, trial_run=False)
    check_same_plan(run_dir, plan, "the spec no longer compiles to the saved plan (was it edited, or trained with "
                    "another specc version?)")
    model = build_from_plan(plan, read_vectors=False)   # pretrained vectors are among the weights
    load_weights(pointer, model)
    if device:
        model.to(device)
    return model.eval()


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                       torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}


def _stored(path: Path) -> tuple[dict, dict]:
    """The dtype of each stored tensor and the file's metadata."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_slice(k).get_dtype() for k in f.keys()}, f.metadata() or {}
    except Exception as exc:   # noqa: BLE001 - safetensors raises several types for damaged files
        raise RunError(f"{path}: cannot load weights ({exc})") from None


def load_weights(pointer: dict, model) -> None:
    """The published checkpoint's weights into `model`: the file the pointer's checksum names, saved at its step,
    every tensor present, of the model's shape and dtype, finite."""
    path = pointer["path"] / WEIGHTS
    verify_file(path, pointer)
    stored, metadata = _stored(path)
    if metadata.get("step") != str(pointer["step"]):
        raise RunError(f"{path} was saved at step {metadata.get('step')}, the checkpoint is of step "
                       f"{pointer['step']}; the run directory is damaged")
    wrong = [f"{k} is {stored[k]}, the model's {_SAFETENSORS_DTYPES.get(t.dtype, t.dtype)}"
             for k, t in model.state_dict().items() if k in stored and stored[k] != _SAFETENSORS_DTYPES.get(t.dtype)]
    if wrong:
        raise RunError(f"{path} does not match the plan: {'; '.join(wrong[:3])}")
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


_COLUMN_FIELDS = {"name": (str,), "tags": (list,), "dtype": (str,), "is_list": (bool,), "cardinality": (int, type(None)),
                  "value_count": (list, type(None)), "int_range": (list, type(None))}


def run_schema(run_dir) -> Schema:
    """The schema view a run was compiled against (RUN_DIR/columns.json)."""
    path = Path(run_dir) / "columns.json"
    saved = run_json(path, "schema view")
    columns = saved.get("columns")
    if not isinstance(columns, list) or not all(_valid_column(c) for c in columns):
        raise RunError(f"{path} is damaged (each column needs a name, tags, dtype, is_list and an integer or null "
                       "cardinality)")
    source = saved.get("source")
    return Schema.from_columns(columns, source=source if isinstance(source, str) else None)


def _valid_column(column) -> bool:
    if not isinstance(column, dict) or set(column) - set(_COLUMN_FIELDS) or "name" not in column:
        return False
    if not all(isinstance(v, _COLUMN_FIELDS[k]) and (k == "is_list" or not isinstance(v, bool))
               for k, v in column.items()):
        return False
    pairs = [column.get(k) for k in ("value_count", "int_range") if column.get(k) is not None]
    return (all(isinstance(t, str) for t in column.get("tags", []))
            and column.get("dtype", "int") in ("int", "float", "bool", "string")
            and (column.get("cardinality") is None or 0 < column["cardinality"] < 1 << 62)
            and all(len(p) == 2 and all(v is None or (type(v) is int and abs(v) < 1 << 62) for v in p)
                    for p in pairs))


def check_same_plan(run_dir: Path, plan, problem: str | None = None) -> None:
    """`plan` must be the plan the run was trained with (RUN_DIR/plan.json)."""
    saved = run_json(run_dir / "plan.json", "plan")
    if _comparable(plan.to_dict()) != _comparable(saved):
        raise RunError(f"{run_dir}: " + (problem or f"the run was trained from another spec or schema; resume it "
                                                    f"with its own spec ({run_dir / 'spec.json'})"))


def _comparable(plan: dict) -> dict:
    return {k: v for k, v in plan.items() if k not in ("kernels", "schema_source")}


def file_mode() -> int:
    """The mode a newly created file gets under the process's umask (safetensors creates its files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
