"""Which parquet files a path names, and what their footers say (no data read: instant).

`read_footers` returns every file's row groups and the arrow schema the columns are planned from, with every
problem the footers show: missing or non-parquet files, duplicate columns, files that store a column differently.
"""
from __future__ import annotations

import glob as _glob
import os
from dataclasses import dataclass, field
from typing import Sequence

from specc.data_columns import arrow_kind
from specc.errors import did_you_mean


@dataclass
class RowGroup:
    file: int          # index into Footers.files
    index: int         # the row group's index in its file
    first_row: int     # its first row, counted within its file
    n_rows: int


@dataclass
class Footers:
    files: list[str]
    row_groups: list[RowGroup]                        # those holding rows
    file_rows: list[int]                              # rows per file
    arrow_schema: object | None              # of the first readable file; None when no file could be read
    problems: list[str] = field(default_factory=list)
    unusable: set[str] = field(default_factory=set)   # columns some file stores differently: not read at all

    def where(self, file: int, row: int) -> str:
        """'row R of FILE' for row `row` of file `file` (0-based, within the file); files named from their folder."""
        root = os.path.commonpath([os.path.dirname(f) for f in self.files])
        return f"row {row} of {os.path.relpath(self.files[file], root)!r}"


def resolve_files(path: str) -> tuple[list[str], list[str]]:
    """Parquet files named by `path` (file, folder or glob) and the problems found."""
    path = os.fspath(path)
    if any(ch in path for ch in "*?["):
        files = sorted(f for f in _glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            return [], [f"no file matches the pattern {path!r}"]
        return files, []
    if os.path.isdir(path):
        splits = [s for s in ("train", "valid", "test") if os.path.isdir(os.path.join(path, s))]
        if splits and os.path.isfile(os.path.join(path, "schema.pbtxt")):
            return [], [f"{path!r} is a prepared data folder (`specc data prepare` output), not one split of it: "
                        f"pass {' or '.join(os.path.join(path, s) for s in splits)}"]
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


def read_footers(files: list[str], columns: Sequence[str]) -> Footers:
    """Row groups and schema of `files` from their footers, and every problem they show."""
    import pyarrow.parquet as pq
    out = Footers(files=[], row_groups=[], file_rows=[], arrow_schema=None)
    first = None
    for f in files:
        try:
            meta = pq.read_metadata(f)
            s = meta.schema.to_arrow_schema()
        except Exception as exc:  # pyarrow.ArrowInvalid and friends
            out.problems.append(f"{f!r} is not a parquet file ({str(exc).splitlines()[0][:160]})")
            continue
        twice = [c for c in columns if s.names.count(c) > 1]
        out.problems += [f"{f!r} has {s.names.count(c)} columns named {c!r}; rename or drop all but one"
                         for c in twice]
        out.unusable.update(twice)
        if out.arrow_schema is None:
            out.arrow_schema, first = s, f
        else:
            known = out.arrow_schema.names
            missing = [c for c in columns if c in known and c not in s.names]
            if missing:
                out.problems.append(f"{f!r} lacks column(s) {', '.join(map(repr, missing))} that other files have")
            # every file must store a column alike: the types are planned from the first file's footer
            differ = [c for c in columns if c in known and c in s.names
                      and arrow_kind(s.field(c).type) != arrow_kind(out.arrow_schema.field(c).type)]
            out.problems += [f"{f!r} stores column {c!r} as {s.field(c).type}, {first!r} as "
                             f"{out.arrow_schema.field(c).type}" for c in differ]
            out.unusable.update(missing + differ)
        index = len(out.files)
        out.files.append(f)
        out.file_rows.append(meta.num_rows)
        start = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if n:
                out.row_groups.append(RowGroup(index, g, start, n))
            start += n
    return out
