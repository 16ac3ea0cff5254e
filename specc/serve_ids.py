"""Raw ids at `specc serve`: a run trained on prepared data takes and returns the raw values of its id mappings.

For `--ids raw` (the default where the run has mappings, as for `specc recommend`) every categorical input with a
mapping in RUN_DIR/categories, and the output `item_ids`, carry raw values: BYTES (UTF-8 strings) where the raw
values are strings, INT64 where they are integers. Columns whose raw values are neither (dates, floats, booleans)
and columns without a mapping keep the model's ids; the start-up log and the model metadata say which is which.

Padding in raw form: the empty string for a string column; 0 for an integer column, or one less than its smallest
raw value when 0 is one of them (0-based ids pad with -1). A column whose raw values include its padding (the empty
string) cannot be served raw. Unknown raw values follow `specc.mappings.Mapping.encode`: the explicit
out-of-vocabulary id where the column has one, else the request fails with a message naming the input, the
rows and the values. Top-k slots that hold no item (with --exclude-seen on a tiny catalog) come back as padding.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from specc.errors import DataError
from specc.mappings import CATEGORIES, Mapping
from specc.serve_handler import BadRequest, rows_text
from specc.serve_workspace import ServeError

OUTPUT = "item_ids"
IDS = ("raw", "internal")


# ---------------------------------------------------------------------- at start-up: which columns are raw

def _raw_form(mapping: Mapping, column: str) -> dict | None:
    """{"dtype", "pad"} of a column served raw, or None where its raw values are neither strings nor integers."""
    import pyarrow as pa
    kind = mapping.value_type
    known = mapping.known_values()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if "" in known:
            raise ServeError(f"{column!r} holds the empty string as a raw value, which raw requests use as "
                             "padding; serve this run with --ids internal")
        return {"dtype": "object", "pad": ""}
    if pa.types.is_integer(kind):
        return {"dtype": "int64", "pad": 0 if 0 not in known else min(known) - 1}
    return None


def plan_raw_ids(run_dir, module, ids: str | None) -> dict:
    """column (or "item_ids") -> {"mapping", "dtype", "pad"} for the columns served raw; {} for internal ids."""
    if ids not in (None, *IDS):
        raise ServeError(f"--ids {ids}: choose one of {', '.join(IDS)}")
    if ids == "internal":
        return {}
    columns = dict.fromkeys(module.id_ranges, None)
    if module.has_next_item:
        columns[OUTPUT] = module.model.plan.next_item.target
    raw = {}
    for column, source in columns.items():
        mapping = Mapping.load(run_dir, source or column)
        form = _raw_form(mapping, source or column) if mapping is not None else None
        if form is not None:
            raw[column] = {"mapping": mapping.column, **form}
    if ids == "raw" and not raw:
        raise ServeError(f"{run_dir} has no id mapping with string or integer values (it was not trained on data "
                         "prepared by `specc data prepare`); serve it with --ids internal")
    return raw


def copy_mappings(run_dir, raw: dict, folder: Path) -> None:
    """The mapping files the raw columns need, into a model folder (the server never reads the run directory)."""
    (folder / CATEGORIES).mkdir(exist_ok=True)
    for entry in raw.values():
        shutil.copy(Path(run_dir) / CATEGORIES / f"{entry['mapping']}.parquet", folder / CATEGORIES)


def describe(raw: dict, id_columns) -> str:
    """One line for the start-up log: which columns take raw values, with their padding."""
    datatype = {"object": "BYTES", "int64": "INT64"}
    shown = [f"{c} ({datatype[e['dtype']]}, padding {e['pad']!r})" for c, e in raw.items()]
    internal = [c for c in id_columns if c not in raw]
    return "raw ids: " + (", ".join(shown) or "none") + ("; model ids: " + ", ".join(internal) if internal else "")


# ---------------------------------------------------------------------- per request

class RawIds:
    """Encodes a request's raw columns to the model's ids and decodes its `item_ids`, in the backend stub."""

    def __init__(self, signature, folder):
        self.raw = signature.raw
        self.ragged_lists = set(signature.list_columns) if signature.ragged else set()
        self.mappings = {c: Mapping.load(folder, e["mapping"]).ready() for c, e in self.raw.items()}

    def encode(self, arrays: dict, batch: int, offsets: np.ndarray | None = None) -> dict:
        """`arrays` (of `batch` rows; ragged list columns split by `offsets`) with each raw input column as int64
        ids, padding as 0. Ragged list values must not hold padding."""
        out = dict(arrays)
        for column, entry in self.raw.items():
            if column == OUTPUT:
                continue
            ragged = column in self.ragged_lists
            name = f"{column}__values" if ragged else column
            values = _python_values(out[name], name, entry["dtype"])
            pad = np.fromiter((v == entry["pad"] for v in values), dtype=bool, count=len(values))
            bounds = offsets if ragged else np.arange(batch + 1) * (len(values) // batch)
            if ragged and pad.any():
                raise BadRequest(f"{name} holds the padding value {entry['pad']!r} in row(s) "
                                 f"{rows_text(np.unique(_rows(bounds, pad)))}; ragged values hold real items")
            ids = self.mappings[column].lookup(values)
            ids[pad] = 0
            if (ids < 0).any():
                self._explain_unknown(column, name, values, pad, _rows(bounds, np.ones(len(values), dtype=bool)))
            out[name] = ids.reshape(out[name].shape)
        return out

    def _explain_unknown(self, column: str, name: str, values, pad: np.ndarray, rows: np.ndarray) -> None:
        """Raise the BadRequest that names the rows and values the mapping does not know (Mapping.encode's words)."""
        grouped = [[] for _ in range(int(rows.max()) + 1)]
        for r, v, p in zip(rows.tolist(), values, pad.tolist()):
            if not p:
                grouped[r].append(v)
        try:
            self.mappings[column].encode(grouped)
        except DataError as exc:
            raise BadRequest(f"input {name!r}: {'; '.join(exc.problems)}") from None

    def decode(self, outputs: dict) -> dict:
        """The outputs with `item_ids` as raw values (slots without an item: padding)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        entry = self.raw.get(OUTPUT)
        if entry is None or OUTPUT not in outputs:
            return outputs
        ids = outputs[OUTPUT]
        values = pc.fill_null(self.mappings[OUTPUT].take(np.where(ids > 0, ids, 0).reshape(-1)), entry["pad"])
        if entry["dtype"] == "object":
            raw = values.cast(pa.binary()).to_numpy(zero_copy_only=False)
        else:
            raw = values.cast(pa.int64()).to_numpy()
        return {**outputs, OUTPUT: raw.reshape(ids.shape)}


def _python_values(a: np.ndarray, name: str, dtype: str) -> list:
    """A raw input's values as Python int / str (Triton hands BYTES over as bytes)."""
    flat = a.reshape(-1).tolist()
    if dtype != "object":
        return flat
    try:
        return [v if isinstance(v, str) else v.decode() for v in flat]
    except (UnicodeDecodeError, AttributeError):
        raise BadRequest(f"input {name!r} must hold UTF-8 strings") from None


def _rows(bounds: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The request row of each flat value where `where` holds."""
    return np.searchsorted(bounds, np.flatnonzero(where), side="right") - 1
