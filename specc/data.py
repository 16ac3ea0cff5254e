"""Merlin parquet data -> padded model batches.

Reading goes through merlin-dataloader (`merlin.io.Dataset` + `merlin.dataloader.torch.Loader`, CPU): one pass
turns the ragged `col__values` / `col__offsets` tensors it yields into right-padded `[N, max_length]` arrays kept
in memory (truncated keeping the most recent values), validating values on the way (vectorised numpy). Epochs
are then served from memory with a deterministic global shuffle from `(seed, epoch)`; merlin's own shuffle is
chunk-local and draws from the global numpy RNG in a worker thread, so it is not reproducible from a seed.

Fallback to pyarrow, and why: on CPU, merlin-core flattens list columns with a Python loop
(`pd.Series(itertools.chain(*s))` in `merlin.core.dispatch.flatten_list_column_values`), about 35 s per million
sessions of 10 items; pyarrow hands over the same values/offsets buffers without copying in ~1 s. So
`engine="auto"` (the default) reads through merlin-dataloader up to `MERLIN_MAX_ROWS` rows and through pyarrow
above that, or wherever merlin is not installed (e.g. the GPU benchmark machine). Both engines feed the same
validation and padding code and give identical batches (tested). `engine="merlin"` / `"pyarrow"` force one.

Structural checks that need no data (files exist and are parquet, columns present, list vs scalar, dtypes) read
only the parquet footers with pyarrow, so a wrong file fails in milliseconds with every problem listed.
merlin is imported lazily, inside functions.

Id 0 is padding: trailing 0s in the item column (pre-padded data, e.g. NVTabular ListSlice with pad=True) are
stripped, and the other list columns of the row cut to the same length; a 0 before a real id is an error.
"""
from __future__ import annotations

import glob as _glob
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from specc.errors import DataError, did_you_mean
from specc.schema import Column, Schema

_CHUNK_ROWS = 1 << 17          # rows per chunk in the materialising pass
MERLIN_MAX_ROWS = 200_000      # engine="auto": merlin-dataloader up to this many rows, pyarrow above
ENGINES = ("auto", "merlin", "pyarrow")


# ---------------------------------------------------------------------------------------------
# files and footers
# ---------------------------------------------------------------------------------------------

def _resolve_files(path: str) -> tuple[list[str], list[str]]:
    """Parquet files named by `path` (file, folder or glob) and the problems found."""
    path = os.fspath(path)
    if any(ch in path for ch in "*?["):
        files = sorted(f for f in _glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            return [], [f"no file matches the pattern {path!r}"]
        return files, []
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, f) for root, dirs, names in os.walk(path) for f in names
            if f.endswith((".parquet", ".parq", ".pq")) and not f.startswith((".", "_")))
        if not files:
            return [], [f"the folder {path!r} holds no .parquet files"]
        return files, []
    if not os.path.exists(path):
        parent = os.path.dirname(path) or "."
        msg = f"{path!r} does not exist"
        if os.path.isdir(parent):
            near = did_you_mean(os.path.basename(path), os.listdir(parent))
            if near:
                msg += f" ({near})"
        return [], [msg]
    return [path], []


def _arrow_kind(t) -> tuple[bool | None, str]:
    """(is_list, element kind) of an arrow type; kind one of int, float, bool, string, other."""
    import pyarrow as pa
    is_list = False
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        is_list, t = True, t.value_type
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return None, "nested list"
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return is_list, "int"
    if pa.types.is_floating(t):
        return is_list, "float"
    if pa.types.is_boolean(t):
        return is_list, "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        return is_list, "string"
    return is_list, str(t)


@dataclass
class _ColumnPlan:
    name: str
    is_list: bool
    floating: bool                 # output float32 (else int64)
    cardinality: int | None
    continuous: bool
    domain: tuple[int, int] | None = None   # allowed [min, max] of a non-categorical int column (int_domain)
    binary: bool = False                     # a non-categorical 0/1 column: every value must be exactly 0 or 1


def _plan_columns(schema: Schema, columns: Sequence[str], arrow_schema, problems: list[str]) -> list[_ColumnPlan]:
    plans = []
    data_names = list(arrow_schema.names)
    for name in columns:
        if name not in data_names:
            near = did_you_mean(name, data_names)
            problems.append(f"column {name!r} is not in the data" + (f" ({near})" if near else
                            f"; the data has {', '.join(map(repr, data_names[:12]))}"
                            + (" ..." if len(data_names) > 12 else "")))
            continue
        is_list, kind = _arrow_kind(arrow_schema.field(name).type)
        col: Column | None = schema[name] if name in schema else None
        if is_list is None or kind not in ("int", "float", "bool"):
            problems.append(f"column {name!r} holds {arrow_schema.field(name).type}, which specc cannot feed to a "
                            "model: encode it as integer ids (e.g. NVTabular Categorify) or floats")
            continue
        if col is None:
            plans.append(_ColumnPlan(name, bool(is_list), kind == "float", None, kind == "float"))
            continue
        if col.is_list and not is_list:
            problems.append(f"column {name!r} is a scalar in the data but a list (sequence) in the schema")
            continue
        if not col.is_list and is_list:
            problems.append(f"column {name!r} is a list in the data but a scalar in the schema "
                            "(tag it `list` / give it a value_count, or use a scalar column)")
            continue
        wants_ids = col.is_categorical or col.cardinality is not None or (
            col.dtype in ("int", "bool") and not col.is_continuous)
        if col.is_categorical and kind == "bool" and "binary_classification" not in col.tags:
            problems.append(f"column {name!r} holds booleans but the schema says it is categorical: categorical "
                            "columns must hold integer ids in [0, cardinality)")
            continue
        if col.is_categorical and kind == "float":
            problems.append(f"column {name!r} holds floats ({arrow_schema.field(name).type}) but the schema says it "
                            "is categorical: categorical columns must hold integer ids in [0, cardinality)")
            continue
        floating = col.is_continuous or col.dtype == "float" or (kind == "float" and not wants_ids)
        binary = col.cardinality is None and ("binary_classification" in col.tags or col.dtype == "bool")
        plans.append(_ColumnPlan(name, col.is_list, floating, col.cardinality, col.is_continuous or floating,
                                 None if col.cardinality is not None else col.int_range, binary))
    return plans


# ---------------------------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------------------------

@dataclass
class SequenceDataset:
    path: str
    schema: Schema
    columns: list[str]
    n_rows: int
    n_skipped: int
    max_length: int
    item_column: str | None = None
    engine: str = "pyarrow"        # which reader loaded it: "merlin" (merlin-dataloader) or "pyarrow"
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _floating: dict[str, bool] = field(default_factory=dict, repr=False)
    _item_counts: np.ndarray | None = field(default=None, repr=False)
    _source_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _batch_size: int | None = field(default=None, repr=False)
    _drop_last: bool = field(default=False, repr=False)

    @property
    def n_total(self) -> int:
        """Rows read from the data: those kept (`n_rows`) and those skipped as too short (`n_skipped`)."""
        return self.n_rows + self.n_skipped

    def source_rows(self) -> np.ndarray:
        """int64 `[n_rows]`: for each row kept, in the order `batches(..., shuffle=False)` yields them, its 0-based
        index among all `n_total` rows read (counted across files in reading order, skipped rows included)."""
        return self._source_rows.copy()

    def batches(self, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                drop_last: bool = False) -> Iterator[dict]:
        """Batches of `{column: tensor}`: list columns `[B, max_length]`, scalars `[B]`; int64 ids, float32 values.
        With `shuffle`, the order is a permutation drawn from `(seed, epoch)` alone."""
        import torch
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._batch_size, self._drop_last = batch_size, drop_last
        n = self.n_rows
        order = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF]).permutation(n) \
            if shuffle else None
        stop = (n // batch_size) * batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = slice(start, min(start + batch_size, n)) if order is None else order[start:start + batch_size]
            batch = {}
            for name in self.columns:
                arr = self._arrays[name][idx]
                t = torch.from_numpy(np.ascontiguousarray(arr))
                batch[name] = t.to(torch.float32 if self._floating[name] else torch.int64)
            yield batch

    def __len__(self) -> int:
        if self._batch_size is None:
            return self.n_rows
        if self._drop_last:
            return self.n_rows // self._batch_size
        return math.ceil(self.n_rows / self._batch_size)

    def item_counts(self, cardinality: int):
        """float `[cardinality]`: how often each item id occurs in `item_column` over the usable rows
        (padding id 0 excluded; counted before truncation to max_length)."""
        import torch
        out = np.zeros(int(cardinality), dtype=np.float64)
        if self._item_counts is not None:
            k = min(len(self._item_counts), int(cardinality))
            out[:k] = self._item_counts[:k]
        out[0] = 0.0
        return torch.from_numpy(out.astype(np.float32))


def open_dataset(path, schema: Schema, columns: Sequence[str], *, item_column: str | None, max_length: int,
                 min_length: int = 1, engine: str = "auto") -> SequenceDataset:
    """Open, validate and load parquet data for a model; raises `DataError` listing every problem found."""
    import pyarrow.parquet as pq

    source = os.fspath(path)
    columns = list(dict.fromkeys(columns))
    if item_column is not None and item_column not in columns:
        columns.append(item_column)
    if max_length < 1:
        raise DataError([f"max_length must be >= 1 (got {max_length})"], source=source)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if not columns:
        raise ValueError("columns (or item_column) must name at least one column to read")

    files, problems = _resolve_files(source)
    if problems:
        raise DataError(problems, source=source)

    # --- footers only: parquet? same columns? ---
    arrow_schema = None
    file_rows = []
    may_hold_nulls = False
    for f in files:
        try:
            meta = pq.read_metadata(f)
            s = meta.schema.to_arrow_schema()
            file_rows.append(meta.num_rows)
            may_hold_nulls = may_hold_nulls or _may_hold_nulls(meta, columns)
        except Exception as exc:  # pyarrow.ArrowInvalid and friends
            problems.append(f"{f!r} is not a parquet file ({str(exc).splitlines()[0][:160]})")
            continue
        twice = [c for c in columns if s.names.count(c) > 1]
        if twice:
            problems += [f"{f!r} has {s.names.count(c)} columns named {c!r}; rename or drop all but one" for c in twice]
        if arrow_schema is None:
            arrow_schema, first = s, f
        else:
            missing = [c for c in columns if c in arrow_schema.names and c not in s.names]
            if missing:
                problems.append(f"{f!r} lacks column(s) {', '.join(map(repr, missing))} that other files have")
            # every file must store a column alike: the types are planned from the first file's footer
            problems += [f"{f!r} stores column {c!r} as {s.field(c).type}, {first!r} as {arrow_schema.field(c).type}"
                         for c in columns if c in arrow_schema.names and c in s.names
                         and _arrow_kind(s.field(c).type) != _arrow_kind(arrow_schema.field(c).type)]
    if problems or arrow_schema is None:
        raise DataError(problems or [f"no readable parquet file under {source!r}"], source=source)

    plans = _plan_columns(schema, columns, arrow_schema, problems)
    if problems:
        raise DataError(problems, source=source)
    list_names = [p.name for p in plans if p.is_list]
    # a scalar item column is allowed (one item per row); then lengths come from the first list column
    length_col = item_column if item_column in list_names else (list_names[0] if list_names else None)

    # --- one pass through merlin-dataloader (or pyarrow, see the module docstring) ---
    if engine == "auto":
        engine = "merlin" if sum(file_rows) <= MERLIN_MAX_ROWS and _have_merlin() else "pyarrow"
    names = [p.name for p in plans]
    acc = _Accumulator(plans, max_length, min_length, length_col, item_column)
    nulls: dict[str, list] = {}
    if engine == "merlin":
        # merlin reads a null as NaN (or fails on a null list), so nulls are looked for with pyarrow first,
        # unless the footers' statistics rule them out
        for _ in _arrow_chunks(files, names, source, nulls) if may_hold_nulls else ():
            pass
        if not nulls:
            try:
                for chunk in _merlin_chunks(files, names, source):
                    acc.add(chunk)
            except _MerlinFailed:
                # merlin-core's CPU path has edge cases it cannot read (e.g. a chunk whose lists are all empty);
                # the footers already passed, so read the same data with pyarrow instead
                engine = "pyarrow"
                acc = _Accumulator(plans, max_length, min_length, length_col, item_column)
    if engine == "pyarrow":
        for chunk in _arrow_chunks(files, names, source, nulls):
            acc.add(chunk)
    where = _row_namer(files, file_rows)
    if nulls:
        raise DataError([f"column {name!r}: {count} null value(s) (first in {where(row)}); fill or drop them"
                         for name, (count, row) in nulls.items()], source=source)
    problems = acc.problems(where)
    if problems:
        raise DataError(problems, source=source)
    n_rows = acc.n_kept
    if n_rows == 0:
        what = f"fewer than {min_length} items in {length_col!r}" if min_length > 1 else f"an empty {length_col!r}"
        raise DataError([f"every row ({acc.n_total}) has {what}: nothing to train or evaluate on"], source=source)
    return SequenceDataset(path=source, schema=schema, columns=columns, n_rows=n_rows,
                           n_skipped=acc.n_total - n_rows, max_length=max_length, item_column=item_column,
                           engine=engine,
                           _arrays=acc.arrays(), _floating={p.name: p.floating for p in plans},
                           _item_counts=acc.item_counts, _source_rows=acc.source_rows())


def _may_hold_nulls(meta, columns: Sequence[str]) -> bool:
    """False only when the footer's statistics say that none of `columns` holds a null (for a list column an
    empty list also counts here, which only costs a needless scan)."""
    wanted = set(columns)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema.split(".")[0] in wanted:
                stats = chunk.statistics
                if stats is None or not stats.has_null_count or stats.null_count > 0:
                    return True
    return False


def _row_namer(files: list[str], file_rows: list[int]):
    """`where(row)` -> "row R of 'FILE'": where the 0-based `row`, counted across `files` in reading order, is."""
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    labels = [os.path.relpath(f, root) for f in files]
    starts = np.cumsum([0] + file_rows)

    def where(row: int) -> str:
        i = int(np.searchsorted(starts, row, side="right")) - 1
        return f"row {row - int(starts[i])} of {labels[i]!r}"
    return where


class _MerlinFailed(Exception):
    """merlin-dataloader raised while reading data whose footers were fine."""


def _have_merlin() -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec("merlin.dataloader") is not None and \
            importlib.util.find_spec("merlin.io") is not None
    except (ImportError, ValueError):
        return False


def _arrow_chunks(files: list[str], names: list[str], source: str, nulls: dict[str, list]):
    """The same chunks as `_merlin_chunks`, read with pyarrow (zero-copy values / offsets). Nulls are counted into
    `nulls` (name -> [count, first row]); from the first chunk holding one on, no chunk is yielded."""
    import pyarrow.parquet as pq
    base = 0
    for f in files:
        try:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=_CHUNK_ROWS, columns=names):
                out = {}
                for name in names:
                    values, off, null_rows = _arrow_column(rb.column(rb.schema.get_field_index(name)))
                    if off is None:
                        out[name] = values
                    else:
                        out[name + "__values"], out[name + "__offsets"] = values, off
                    if null_rows.size:
                        rec = nulls.setdefault(name, [0, base + int(null_rows.min())])
                        rec[0] += null_rows.size
                base += rb.num_rows
                if not nulls:
                    yield out
        except Exception as exc:
            raise DataError([f"cannot read {f!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"],
                            source=source) from None


def _arrow_column(arr) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(values, offsets, the row of each null) of an arrow column chunk, as numpy: offsets start at 0 and index
    `values` for a list column, None for a scalar one. A null list and a null inside a list each count once."""
    import pyarrow as pa
    null_rows = [np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))] if arr.null_count else []
    values, off = arr, None
    if pa.types.is_fixed_size_list(arr.type):
        off = np.arange(arr.offset, arr.offset + len(arr) + 1, dtype=np.int64) * arr.type.list_size
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        off = np.asarray(arr.offsets, dtype=np.int64)      # they index arr.values directly, even when sliced
    if off is not None:
        values = arr.values.slice(off[0], off[-1] - off[0])
        off = off - off[0]
        if values.null_count:
            inner = np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))
            null_rows.append(np.searchsorted(off, inner, side="right") - 1)
    return values.to_numpy(zero_copy_only=False), off, np.concatenate(null_rows or [np.zeros(0, np.int64)])


def _merlin_chunks(files: list[str], names: list[str], source: str):
    """Yield dicts of numpy arrays (`col` for scalars, `col__values` / `col__offsets` for lists) from
    merlin-dataloader, reading only `names`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import merlin.io
        from merlin.dataloader.torch import Loader
        try:
            ds = merlin.io.Dataset(files, engine="parquet", cpu=True)
            # merlin adopts a schema.pbtxt / .merlin/schema.json found beside the data and drops the columns it
            # does not list; specc has already chosen its schema, so read the columns the files actually hold
            ds.infer_schema()
            ds.schema = ds.schema.select_by_name(names)
            if sorted(ds.schema.column_names) != sorted(names):
                raise ValueError(f"merlin did not find column(s) {sorted(set(names) - set(ds.schema.column_names))}")
            loader = Loader(ds, batch_size=_CHUNK_ROWS, shuffle=False)
            label_names = list(getattr(loader, "label_names", []) or [])
            for tensors, labels in loader:
                # merlin splits target-tagged columns (from a schema.pbtxt next to the data) off as labels
                tensors = dict(tensors)
                if isinstance(labels, dict):
                    tensors.update(labels)
                elif labels is not None and len(label_names) == 1:
                    tensors[label_names[0]] = labels
                out = {}
                for key, value in tensors.items():
                    if isinstance(value, tuple):        # older loaders: (values, offsets)
                        out[key + "__values"] = value[0].numpy()
                        out[key + "__offsets"] = value[1].numpy()
                    else:
                        out[key] = value.numpy()
                yield out
        except Exception as exc:
            raise _MerlinFailed(f"{type(exc).__name__}: {exc}") from exc


class _Accumulator:
    """Validates each chunk (vectorised) and builds the padded arrays of the rows kept."""

    def __init__(self, plans: list[_ColumnPlan], max_length: int, min_length: int, length_col: str | None,
                 item_column: str | None):
        self.plans, self.L, self.min_length = plans, max_length, min_length
        self.length_col, self.item_column = length_col, item_column
        self.parts: dict[str, list[np.ndarray]] = {p.name: [] for p in plans}
        self.kept: list[np.ndarray] = []           # the row number (from 0, over all chunks) of each row kept
        self.n_total = 0
        self.n_kept = 0
        self.out_of_range: dict[str, list] = {}    # name -> [count, min, max]
        self.non_finite: dict[str, list] = {}      # name -> [count, first row]
        self.out_of_domain: dict[str, list] = {}   # name -> [count, min, max]
        self.ragged: list = [0, None]              # rows whose list columns disagree in length, first example
        self.zero_inside: list = [0, None]         # rows with a 0 (padding) before an item id, first row
        self.item_counts: np.ndarray | None = None

    def add(self, chunk: dict[str, np.ndarray]):
        lists = {p.name: _list_parts(chunk, p.name) for p in self.plans if p.is_list}
        first = self.plans[0].name
        n = len(lists[first][1]) - 1 if first in lists else len(chunk[first])
        if n == 0:
            return
        base = self.n_total
        self.n_total += n
        lengths = {name: np.diff(off) for name, (values, off) in lists.items()}

        n_items = n_ids = None
        if self.item_column in lists:   # trailing 0s of the item column are padding
            n_items, n_ids = _unpadded(*lists[self.item_column])

        # rows whose list columns differ in length (a side list may match the item list with or without padding)
        if len(lengths) > 1:
            ref_name = self.item_column if n_items is not None else next(iter(lengths))
            ref = lengths[ref_name]
            real = n_items if n_items is not None else ref
            bad = np.zeros(n, dtype=bool)
            for other in lengths:
                if other != ref_name:
                    bad |= (lengths[other] != ref) & (lengths[other] != real)
            nbad = int(bad.sum())
            if nbad:
                if self.ragged[1] is None:
                    i = int(np.argmax(bad))
                    self.ragged[1] = (base + i, {k: int(v[i]) for k, v in lengths.items()})
                self.ragged[0] += nbad

        # every list column of the row stops where its items do
        if n_items is not None:
            inside = np.flatnonzero(n_items > n_ids)
            if inside.size:
                self.zero_inside[0] += inside.size
                if self.zero_inside[1] is None:
                    self.zero_inside[1] = base + int(inside[0])
            lengths = {name: np.minimum(length, n_items) for name, length in lengths.items()}

        keep = np.ones(n, dtype=bool)
        if self.length_col is not None:
            keep = lengths[self.length_col] >= max(self.min_length, 1)
        self.n_kept += int(keep.sum())
        self.kept.append(base + np.flatnonzero(keep))

        for p in self.plans:
            if p.is_list:
                values, off = lists[p.name]
                self._check_values(p, values, base, off)
                starts = off[:-1][keep]
                padded = _pad_keep_last(values, starts, starts + lengths[p.name][keep], self.L,
                                        np.float32 if p.floating else _id_dtype(p))
                self.parts[p.name].append(padded)
                if p.name == self.item_column:
                    # counts over the rows kept, before truncation
                    sel = np.repeat(keep, np.diff(off))
                    self._count_items(values[sel])
            else:
                values = chunk[p.name].reshape(n)
                self._check_values(p, values, base, None)
                self.parts[p.name].append(values[keep].astype(np.float32 if p.floating else _id_dtype(p)))
                if p.name == self.item_column:
                    self._count_items(values[keep])

    def _count_items(self, values: np.ndarray):
        if values.size == 0:
            return
        v = values.astype(np.int64)
        v = v[v >= 0]
        c = np.bincount(v)
        if self.item_counts is None:
            self.item_counts = c.astype(np.float64)
        else:
            if len(c) > len(self.item_counts):
                c, self.item_counts = self.item_counts, c.astype(np.float64)
            self.item_counts[:len(c)] += c

    def _check_values(self, p: _ColumnPlan, values: np.ndarray, base: int, off: np.ndarray | None):
        if values.size == 0:
            return
        if np.issubdtype(values.dtype, np.floating):
            finite = np.isfinite(values)
            if not finite.all():
                bad = int((~finite).sum())
                first = int(np.argmax(~finite))
                row = base + (int(np.searchsorted(off, first, side="right") - 1) if off is not None else first)
                rec = self.non_finite.setdefault(p.name, [0, row])
                rec[0] += bad
                if not p.continuous:
                    return
                values = values[finite]
        if p.cardinality is not None and not p.floating:
            lo, hi = values.min(), values.max()
            if lo < 0 or hi >= p.cardinality:
                bad = int(((values < 0) | (values >= p.cardinality)).sum())
                rec = self.out_of_range.setdefault(p.name, [0, int(lo), int(hi)])
                rec[0] += bad
                rec[1], rec[2] = min(rec[1], int(lo)), max(rec[2], int(hi))
        if p.binary or p.domain is not None:
            outside = (values != 0) & (values != 1) if p.binary else (values < p.domain[0]) | (values > p.domain[1])
            if outside.any():
                lo, hi = values[outside].min(), values[outside].max()
                rec = self.out_of_domain.setdefault(p.name, [0, lo, hi])
                rec[0] += int(outside.sum())
                rec[1], rec[2] = min(rec[1], lo), max(rec[2], hi)

    def problems(self, where) -> list[str]:
        """Every problem found; `where(row)` names the file and row of a row number."""
        out = []
        plan = {p.name: p for p in self.plans}
        for name, (count, lo, hi) in self.out_of_range.items():
            card = plan[name].cardinality
            out.append(f"column {name!r}: {count} value(s) outside [0, {card}) (min seen {lo}, max seen {hi}); "
                       f"ids must be < the schema's cardinality (int_domain.max + 1 = {card}): fix the "
                       "schema's int_domain.max or re-encode the ids")
        for name, (count, lo, hi) in self.out_of_domain.items():
            seen = ", ".join(dict.fromkeys(map(_number, (lo, hi))))
            if plan[name].binary:
                out.append(f"column {name!r}: {count} value(s) that are not 0 or 1 (e.g. {seen}); a binary column "
                           "(binary_classification or bool) holds only 0 and 1: fix the data or the schema")
            else:
                a, b = plan[name].domain
                out.append(f"column {name!r}: {count} value(s) outside int_domain [{a}, {b}] (e.g. {seen}); "
                           "fix the data or the schema")
        for name, (count, row) in self.non_finite.items():
            out.append(f"column {name!r}: {count} NaN/inf value(s) (first in {where(row)}); fill or drop them")
        if self.ragged[0]:
            row, lens = self.ragged[1]
            shown = ", ".join(f"{k!r} has {v}" for k, v in lens.items())
            out.append(f"{self.ragged[0]} row(s) whose list columns differ in length (first: {where(row)}: {shown}); "
                       "the list columns of one row must describe the same interactions")
        if self.zero_inside[0]:
            out.append(f"column {self.item_column!r}: id 0 (padding) inside {self.zero_inside[0]} sequence(s) "
                       f"(first: {where(self.zero_inside[1])}); item ids start at 1 — shift 0-based ids by 1 or "
                       "re-encode")
        return out

    def source_rows(self) -> np.ndarray:
        return np.concatenate(self.kept) if self.kept else np.zeros(0, np.int64)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for p in self.plans:
            parts = self.parts[p.name]
            if parts:
                out[p.name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
            else:
                shape = (0, self.L) if p.is_list else (0,)
                out[p.name] = np.zeros(shape, np.float32 if p.floating else np.int64)
        return out


def _list_parts(chunk: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, int64 offsets from 0) of list column `name` in a chunk; a fixed-size list may arrive as `[n, k]`."""
    if name + "__offsets" in chunk:
        return chunk[name + "__values"], chunk[name + "__offsets"].astype(np.int64, copy=False)
    v = chunk[name].reshape(len(chunk[name]), -1)
    return v.reshape(-1), np.arange(len(v) + 1, dtype=np.int64) * v.shape[1]


def _unpadded(values: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a list column: its length without the trailing 0s (padding), and how many non-zero values it
    holds (fewer than that length where a 0 comes before a non-zero value)."""
    nonzero = np.flatnonzero(values[:off[-1]] != 0)
    before_end = np.searchsorted(nonzero, off[1:])
    count = before_end - np.searchsorted(nonzero, off[:-1])
    length = np.zeros(len(count), dtype=np.int64)
    has = count > 0
    length[has] = nonzero[before_end[has] - 1] + 1 - off[:-1][has]
    return length, count


def _number(v) -> str:
    """A value for a message: 2 rather than 2.0, 0.1 rather than 0.10000000149011612."""
    return str(int(v)) if float(v).is_integer() else f"{float(v):g}"


def _id_dtype(p: _ColumnPlan):
    return np.int32 if p.cardinality is not None and p.cardinality < 2 ** 31 else np.int64


def _pad_keep_last(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, L: int, dtype) -> np.ndarray:
    """Rows `values[starts[i]:ends[i]]` as `[n, L]`: the last L values of each, right-padded with 0."""
    n = len(starts)
    out = np.zeros((n, L), dtype=dtype)
    if n == 0:
        return out
    first = np.maximum(starts, ends - L)
    length = ends - first
    idx = first[:, None] + np.arange(L)[None, :]
    mask = np.arange(L)[None, :] < length[:, None]
    out[mask] = values[idx[mask]]
    return out
