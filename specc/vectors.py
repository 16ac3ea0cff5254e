"""Pretrained vectors from files (inputs.pretrained): read a .npy, .safetensors or parquet file (vector_files.py),
and lay its vectors out as a table of `rows` x `dim` indexed by id, checking dims, ids, coverage and finiteness.

The checker calls this when compiling (each problem becomes a located SpecError), the builder when building.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class VectorsProblem(Exception):
    key: str            # the spec key to fix: "path", "dim", "vectors" or "ids"
    code: str
    message: str
    hint: str | None = None


def resolve_path(path: str, base_dir: str | None) -> Path:
    """A path of the spec: relative ones are relative to the spec's folder (the working directory for a dict)."""
    p = Path(path)
    return p if p.is_absolute() else Path(base_dir or os.getcwd()) / p


def read_table(kind: str, path: Path, rows: int, dim: int, vectors: str | None = None, ids: str | None = None,
               missing: str = "error") -> np.ndarray:
    """The float32 table [rows, dim] (row 0, padding, zero; ids without a vector zero when missing="zero")."""
    values, keys = _read(kind, path, vectors, ids)
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.floating):
        raise VectorsProblem("vectors" if kind != "npy" else "path", "invalid_vectors",
                             f"{path.name} holds {values.dtype} values of shape {list(values.shape)}, not "
                             "float vectors [n, dim]", "store one float vector per row")
    if values.shape[1] != dim:
        raise VectorsProblem("dim", "shape_mismatch",
                             f"{path.name} holds vectors of dim {values.shape[1]}, the spec says {dim}",
                             f'set "dim": {values.shape[1]}, or use the file made for this model')
    keys = np.arange(len(values)) if keys is None else _check_ids(keys, len(values), rows)
    inside = keys < rows
    if not inside.all():
        raise VectorsProblem("path" if ids is None and kind != "parquet" else "ids", "id_out_of_range",
                             f"{path.name} has vectors for ids up to {int(keys.max())} but the column's ids run "
                             f"0..{rows - 1}", "use the file made for this catalog (row i is the vector of id i)")
    used = keys > 0   # id 0 is padding: its vector is never read
    bad = ~np.isfinite(values[used]).all(axis=1)
    if bad.any():
        raise VectorsProblem("path", "non_finite",
                             f"{path.name}: the vector of id {int(keys[used][bad][0])} holds NaN or infinity "
                             f"({int(bad.sum())} such vector(s))", "replace them, or drop those rows")
    covered = np.zeros(rows, dtype=bool)
    covered[keys[used]] = True
    absent = np.flatnonzero(~covered[1:]) + 1
    if len(absent) and missing == "error":
        raise VectorsProblem("path", "incomplete_coverage",
                             f"{path.name} has no vector for {len(absent)} of the {rows - 1} ids (first: "
                             f"{', '.join(map(str, absent[:5]))})",
                             'give every id a vector (row i is id i; row 0 is padding), or set "missing": "zero"')
    table = np.zeros((rows, dim), dtype=np.float32)
    table[keys[used]] = values[used]
    return table


def _check_ids(keys: np.ndarray, n: int, rows: int) -> np.ndarray:
    if keys.ndim != 1 or len(keys) != n or not np.issubdtype(keys.dtype, np.integer):
        raise VectorsProblem("ids", "invalid_ids", f"the ids must be {n} integers, one per vector; got "
                             f"{keys.dtype} of shape {list(keys.shape)}")
    if (keys < 0).any():
        raise VectorsProblem("ids", "id_out_of_range", f"negative id {int(keys.min())}; ids run 0..{rows - 1}")
    unique, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        raise VectorsProblem("ids", "duplicate_ids", f"id {int(unique[counts > 1][0])} has "
                             f"{int(counts.max())} vectors", "keep one vector per id")
    return keys.astype(np.int64)


def _read(kind: str, path: Path, vectors: str | None, ids: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    from specc import vector_files
    if not (path.is_file() or (kind == "parquet" and path.is_dir())):
        raise VectorsProblem("path", "file_not_found", f"vectors file {str(path)!r} does not exist",
                             "paths are relative to the spec file")
    try:
        return vector_files.READERS[kind](path, vectors, ids)
    except VectorsProblem:
        raise
    except Exception as exc:   # noqa: BLE001 - numpy, safetensors and pyarrow raise many types for damaged files
        raise VectorsProblem("path", "file_unreadable", f"cannot read {path.name} as {kind}: "
                             f"{type(exc).__name__}: {str(exc)[:200]}",
                             f"write it with {vector_files.WRITERS[kind]}") from None
