"""Pretrained vectors from files (inputs.pretrained): read a .npy, .safetensors or parquet item table, and lay
its vectors out as a table of `rows` x `dim` indexed by id, checking dims, ids, coverage and finiteness.

The checker calls this when compiling (each problem becomes a located SpecError), the builder when building.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specc.errors import did_you_mean


@dataclass
class VectorsProblem(Exception):
    key: str            # the spec key to fix: "path", "dim", "vectors" or "ids"
    code: str
    message: str
    hint: str | None = None


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
    keys = np.arange(len(values)) if keys is None else _check_ids(keys, len(values), rows, kind)
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


def _check_ids(keys: np.ndarray, n: int, rows: int, kind: str) -> np.ndarray:
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
    if not path.is_file():
        raise VectorsProblem("path", "file_not_found", f"vectors file {str(path)!r} does not exist",
                             "paths are relative to the spec file")
    try:
        return {"npy": _read_npy, "safetensors": _read_safetensors, "parquet": _read_parquet}[kind](path, vectors, ids)
    except VectorsProblem:
        raise
    except Exception as exc:   # noqa: BLE001 - numpy, safetensors and pyarrow raise many types for damaged files
        raise VectorsProblem("path", "file_unreadable", f"cannot read {path.name} as {kind}: "
                             f"{type(exc).__name__}: {str(exc)[:200]}", f"write it with {_WRITERS[kind]}") from None


_WRITERS = {"npy": "numpy.save", "safetensors": "safetensors.numpy.save_file", "parquet": "pyarrow or polars"}


def _read_npy(path: Path, vectors: str | None, ids: str | None):
    return np.load(path, mmap_mode="r", allow_pickle=False), None


def _read_safetensors(path: Path, vectors: str | None, ids: str | None):
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys())
        for key, name in (("vectors", vectors), ("ids", ids)):
            if name is not None and name not in names:
                raise VectorsProblem(key, "unknown_tensor", f"{path.name} has no tensor {name!r}",
                                     did_you_mean(name, names) or "its tensors: " + ", ".join(names))
        if vectors is None:
            candidates = [n for n in names if n != ids]
            if len(candidates) != 1:
                raise VectorsProblem("vectors", "ambiguous_tensor",
                                     f"{path.name} holds {len(candidates)} tensors besides the ids",
                                     'name the vectors\' tensor in "vectors": ' + ", ".join(candidates))
            vectors = candidates[0]
        values = f.get_tensor(vectors)
        values = values.float().numpy() if values.is_floating_point() else values.numpy()
        return values, None if ids is None else f.get_tensor(ids).numpy()


def _read_parquet(path: Path, vectors: str, ids: str):
    import pyarrow.parquet as pq
    names = pq.read_schema(path).names
    for key, name in (("vectors", vectors), ("ids", ids)):
        if name not in names:
            raise VectorsProblem(key, "unknown_column", f"{path.name} has no column {name!r}",
                                 did_you_mean(name, names) or "its columns: " + ", ".join(names))
    import pyarrow as pa
    import pyarrow.compute as pc
    table = pq.read_table(path, columns=[ids, vectors])
    column = table.column(vectors).combine_chunks()
    is_list = pa.types.is_list(column.type) or pa.types.is_large_list(column.type) \
        or pa.types.is_fixed_size_list(column.type)
    lengths = set(pc.list_value_length(column).to_pylist()) if is_list else set()
    if len(lengths) != 1 or None in lengths or column.null_count:
        raise VectorsProblem("vectors", "invalid_vectors", f"column {vectors!r} of {path.name} is not a list of "
                             "one length in every row", "store one fixed-size float vector per item")
    values = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), lengths.pop())
    return values, table.column(ids).to_numpy()
