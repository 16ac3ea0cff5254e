"""Writing DIR: a staging folder beside it that becomes DIR by one rename at the end, so a failed or interrupted
preparation never leaves a DIR that looks complete; parquet parts in the types Merlin reads (list, string)."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from specc.errors import UserError


def check_out(out: str) -> None:
    if os.path.isfile(out):
        raise UserError(f"--out {out} is a file; give a folder to write")
    if os.path.isdir(out) and os.listdir(out):
        raise UserError(f"--out {out} already exists and is not empty; choose a new folder (nothing was written)")


@contextmanager
def staging(out: str):
    """A fresh folder beside `out`, renamed to `out` when the block succeeds and removed when it fails."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create {parent} ({exc.strerror})") from None
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        shutil.rmtree(os.path.join(tmp, "_work"), ignore_errors=True)
        if os.path.isdir(out):
            os.rmdir(out)   # empty (checked before)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merlin_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(_merlin_type(t.value_type))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_merlin_type(t.value_type), t.list_size)
    if pa.types.is_large_string(t):
        return pa.string()
    return t


def write_parquet(frame: pl.DataFrame, path: str) -> None:
    """A parquet file with plain `list` and `string` types (polars' large types trip some Merlin readers)."""
    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    schema = pa.schema([pa.field(f.name, _merlin_type(f.type)) for f in table.schema])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table.cast(schema), path, row_group_size=128 * 1024)


def write_json(value: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


def key_dtype(dtype) -> str:
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    return "bool" if dtype == pl.Boolean else "string"


def schema_columns(spec, layout, key_type, mappings: dict, lengths: tuple[int, int]) -> list[dict]:
    """The columns of the session files, tagged as Transformers4Rec expects."""
    key_tags = ["session", "id"] if spec.session else ["user", "id"]
    cols = [{"name": spec.key, "tags": key_tags, "dtype": key_dtype(key_type)}]
    if layout.gap_us:
        cols.append({"name": "session_index", "tags": ["session"], "dtype": "int"})
    lists = {"is_list": True, "value_count": list(lengths)}
    for name in layout.event_columns:
        tags = ["item_id", "categorical"] if name == spec.item else ["item"]
        if name in mappings:
            tags += [] if name == spec.item else ["categorical"]
            cols.append({"name": f"{name}-list", "tags": tags + ["list"], "dtype": "int",
                         "cardinality": mappings[name].cardinality, **lists})
        else:
            cols.append({"name": f"{name}-list", "tags": tags + ["continuous", "list"], "dtype": "float", **lists})
    if "timestamp" in layout.derive:   # read by hstu's `time` only: neither categorical nor continuous, no feature
        cols.append({"name": f"{spec.time}-list", "tags": ["time", "list"], "dtype": "int", **lists})
    if "time_since_prev" in layout.derive:
        cols.append({"name": "time_since_prev-list", "tags": ["continuous", "list"], "dtype": "float", **lists})
    for name, cardinality in (("weekday", 8), ("hour", 25)):
        if name in layout.derive:
            cols.append({"name": name, "tags": ["context", "categorical"], "dtype": "int", "cardinality": cardinality})
    return cols
