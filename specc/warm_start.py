"""Warm start (`specc train --init-from RUN_DIR`): a new run begins from a trained run's weights, for daily retrains
on new data. A catalog that grew keeps its trained rows and initialises the new ones as a new model would; any
other difference between the two models' tensors means their plans are incompatible, and is refused."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from specc.checkpoint import WEIGHTS, RunError, kept, verify_file


def warm_start(model, run_dir) -> str:
    """Copy the kept weights of `run_dir` (see `specc.checkpoint.kept`) into `model`; returns what was done."""
    pointer = kept(Path(run_dir))
    path = pointer["path"] / WEIGHTS
    verify_file(path, pointer)
    own = model.state_dict()
    with safe_open(str(path), framework="pt") as stored:
        names = set(stored.keys())
        catalogs = {t.rows for t in model.plan.inputs.tables} if model.plan.inputs else set()
        problems = _incompatible(own, stored, names, catalogs)
        if problems:
            raise RunError(f"--init-from {run_dir}: its model does not fit this spec's plan: {'; '.join(problems[:4])}"
                           + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""))
        grown = []
        with torch.no_grad():
            for name, tensor in own.items():
                old = stored.get_tensor(name)
                tensor[:old.shape[0]].copy_(old) if old.dim() else tensor.copy_(old)
                if old.dim() and old.shape[0] < tensor.shape[0]:
                    grown.append(f"{name} {old.shape[0]:,} -> {tensor.shape[0]:,} rows")
    return f"initialised from {run_dir} (step {pointer['step']})" + (f"; grown: {', '.join(grown)}" if grown else "")


def _incompatible(own: dict, stored, names: set[str], catalogs: set[int]) -> list[str]:
    """What differs between the two models' tensors, beyond the rows of a table (`catalogs`: the tables' row
    counts) that grew."""
    problems = [f"{name} is new" for name in own if name not in names]
    problems += [f"{name} is not in this model" for name in sorted(names - set(own))]
    for name, tensor in own.items():
        if name not in names:
            continue
        shape = tuple(stored.get_slice(name).get_shape())
        rows_grew = len(shape) == tensor.dim() >= 1 and shape[1:] == tuple(tensor.shape[1:]) \
            and shape[0] <= tensor.shape[0] and tensor.shape[0] in catalogs
        if shape != tuple(tensor.shape) and not rows_grew:
            problems.append(f"{name} is {list(shape)} there, {list(tensor.shape)} here")
    return problems
