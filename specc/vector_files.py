"""Readers of pretrained-vector files: each returns (vectors [n, dim], ids [n] or None: row i is id i).
Problems the user can fix raise vectors.VectorsProblem; anything else reads as a damaged file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from specc.errors import did_you_mean
from specc.vectors import VectorsProblem

WRITERS = {"npy": "numpy.save", "safetensors": "safetensors.numpy.save_file", "parquet": "pyarrow or polars"}


def read_npy(path: Path, vectors: str | None, ids: str | None):
    return np.load(path, mmap_mode="r", allow_pickle=False), None


def read_safetensors(path: Path, vectors: str | None, ids: str | None):
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
                                     "name the vectors' tensor in \"vectors\": " + ", ".join(candidates))
            vectors = candidates[0]
        values = f.get_tensor(vectors)
        values = values.float().numpy() if values.is_floating_point() else values.numpy()
        return values, None if ids is None else f.get_tensor(ids).numpy()


def read_parquet(path: Path, vectors: str, ids: str):
    """An item table (an id and a vector per row), or session data: an id list and, aligned with it, a list of
    vectors (every occurrence of an id must carry the same vector)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    files = sorted(str(p) for p in path.rglob("*.parquet")) if path.is_dir() else [str(path)]
    if not files:
        raise VectorsProblem("path", "file_not_found", f"folder {str(path)!r} holds no .parquet file")
    data = ds.dataset(files, format="parquet")
    for key, name in (("vectors", vectors), ("ids", ids)):
        if name not in data.schema.names:
            names = data.schema.names
            raise VectorsProblem(key, "unknown_column", f"{path.name} has no column {name!r}",
                                 did_you_mean(name, names) or "its columns: " + ", ".join(names))
    table = data.to_table(columns=[ids, vectors])
    keys, column = table.column(ids).combine_chunks(), table.column(vectors).combine_chunks()
    if not _is_list(keys.type):
        return _fixed_size(column, vectors, path), keys.to_numpy(zero_copy_only=False)
    aligned = _is_list(column.type) and not keys.null_count and not column.null_count and \
        pc.all(pc.equal(pc.list_value_length(keys), pc.list_value_length(column))).as_py() is not False
    if not aligned:
        raise VectorsProblem("vectors", "misaligned_vectors", f"column {vectors!r} of {path.name} does not hold "
                             f"one vector per id of {ids!r} in every row", "give each position of the list a vector")
    return _one_per_id(keys.flatten().to_numpy(zero_copy_only=False), _fixed_size(column.flatten(), vectors, path),
                       vectors)


def _is_list(t) -> bool:
    import pyarrow as pa
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _fixed_size(column, name: str, path: Path) -> np.ndarray:
    """A list column of one length in every row as an array [rows, length]."""
    import pyarrow.compute as pc
    lengths = set(pc.list_value_length(column).to_pylist()) if _is_list(column.type) else set()
    if len(lengths) != 1 or None in lengths or column.null_count:
        raise VectorsProblem("vectors", "invalid_vectors", f"column {name!r} of {path.name} is not a list of one "
                             "length in every row", "store one fixed-size float vector per id")
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), lengths.pop())


def _one_per_id(keys: np.ndarray, values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Each id's vector once, from data that repeats ids; an id seen with different vectors is an error."""
    if not np.issubdtype(keys.dtype, np.integer):
        return values, keys   # read_table reports the ids' type
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    reference = values[first][inverse]
    same = ((values == reference) | (np.isnan(values) & np.isnan(reference))).all(axis=1)
    if not same.all():
        raise VectorsProblem("vectors", "inconsistent_vectors", f"id {int(keys[~same][0])} has different vectors "
                             f"in column {name!r}", "give every occurrence of an id the same vector")
    return values[first], unique


READERS = {"npy": read_npy, "safetensors": read_safetensors, "parquet": read_parquet}
