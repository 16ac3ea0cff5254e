"""The raw event log: its files (parquet or CSV; files, folders, globs), checked and scanned lazily with polars.

Checks that need no data pass (every file readable and non-empty, every column present, the same dtype in every
file, a time column of a time-like type) read only footers and CSV headers; ragged CSV rows, unparseable times
and null keys are found in the statistics pass (`specc.prepare.stats`). Every problem names its file and column.
"""
from __future__ import annotations

import glob as _glob
import os
from dataclasses import dataclass

import polars as pl

from specc.errors import DataError, did_you_mean
from specc.prepare.continuous import ACCEPTED, is_continuous_type, type_hint
from specc.prepare.times import is_time_like

PARQUET = (".parquet", ".parq", ".pq")
CSV = (".csv", ".tsv")
CSV_INFER_ROWS = 10_000
ROW = "__row"       # the event's position in the log: the tie-breaker that keeps equal times in file order
FILE = "__file"


@dataclass(frozen=True)
class Source:
    files: tuple[str, ...]
    dtypes: dict           # column -> polars dtype, the same in every file
    source: str            # the EVENTS argument, for messages

    def scan(self, columns: list[str], with_file: bool = False) -> pl.LazyFrame:
        """The log's `columns` with a global row index (and the file of each row), lazily."""
        frames = [scan_file(f, with_file).select(columns + ([FILE] if with_file else [])) for f in self.files]
        return pl.concat(frames, how="vertical").with_row_index(ROW)


def resolve_files(paths: list[str]) -> list[str]:
    """The parquet and CSV files named by `paths` (files, folders searched recursively, globs), sorted."""
    files, problems = [], []
    for path in paths:
        if any(ch in path for ch in "*?["):
            found = sorted(f for f in _glob.glob(path, recursive=True) if os.path.isfile(f))
            problems += [] if found else [f"no file matches the pattern {path!r}"]
        elif os.path.isdir(path):
            found = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names
                           if f.lower().endswith(PARQUET + CSV) and not f.startswith((".", "_")))
            problems += [] if found else [f"the folder {path!r} holds no .parquet or .csv files"]
        elif os.path.isfile(path):
            found = [path]
        else:
            parent = os.path.dirname(path) or "."
            near = did_you_mean(os.path.basename(path), os.listdir(parent)) if os.path.isdir(parent) else None
            problems.append(f"{path!r} does not exist" + (f" ({near})" if near else ""))
            found = []
        files += found
    unknown = [f for f in files if not f.lower().endswith(PARQUET + CSV)]
    problems += [f"{f}: not a .parquet or .csv file" for f in unknown]
    if problems:
        raise DataError(problems, source=", ".join(paths))
    return sorted(dict.fromkeys(files))


def open_source(paths: list[str], columns: list[str], time_column: str, continuous: list[str]) -> Source:
    """Check the files' structure (readable, non-empty, `columns` present with one dtype each, a time-like
    `time_column`, numeric `continuous` columns) and return the Source; raises DataError with every problem
    found."""
    files = resolve_files(paths)
    problems, dtypes, first_seen = [], {}, {}
    for f in files:
        schema, problem = _file_schema(f)
        if problem:
            problems.append(f"{f}: {problem}")
            continue
        if f.lower().endswith(CSV) and (ragged := ragged_rows(f, len(schema))):
            problems.append(f"{f}: line {ragged[0]} has {ragged[1]} fields, the header {len(schema)} (a ragged row)")
            continue
        for col in columns:
            if col not in schema:
                near = did_you_mean(col, schema.names())
                problems.append(f"{f}: no column {col!r}" + (f" ({near})" if near else
                                                              f"; its columns are {', '.join(schema.names())}"))
            elif col not in dtypes:
                dtypes[col], first_seen[col] = schema[col], f
            elif schema[col] != dtypes[col]:
                problems.append(f"{f}: column {col!r} is {schema[col]}, but {dtypes[col]} in {first_seen[col]}; "
                                "every file of the log must store a column alike")
    if time_column in dtypes and not is_time_like(dtypes[time_column]):
        problems.append(f"{first_seen[time_column]}: the time column {time_column!r} is {dtypes[time_column]}, not "
                        "a time (use a datetime, a date, a number of seconds since 1970 (see --time-unit) or "
                        "ISO 8601 text)")
    problems += [f"{first_seen[col]}: the continuous column {col!r} is {dtypes[col]}, not a number (a continuous "
                 f"column is {ACCEPTED}{type_hint(dtypes[col])})"
                 for col in continuous if col in dtypes and not is_continuous_type(dtypes[col])]
    if problems:
        raise DataError(problems, source=", ".join(paths))
    return Source(tuple(files), dtypes, ", ".join(paths))


def scan_file(path: str, with_file: bool) -> pl.LazyFrame:
    file_col = FILE if with_file else None
    if path.lower().endswith(PARQUET):
        return pl.scan_parquet(path, include_file_paths=file_col)
    return pl.scan_csv(path, separator="\t" if path.lower().endswith(".tsv") else ",",
                       infer_schema_length=CSV_INFER_ROWS, include_file_paths=file_col, raise_if_empty=True)


def _file_schema(path: str) -> tuple[pl.Schema | None, str | None]:
    if os.path.getsize(path) == 0:
        return None, "the file is empty"
    try:
        schema = scan_file(path, False).collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        kind = "parquet" if path.lower().endswith(PARQUET) else "CSV"
        return None, f"cannot read it as {kind}: {str(exc).strip().splitlines()[0]}"
    if not schema:
        return None, "the file has no columns"
    return schema, None


def ragged_rows(path: str, n_fields: int) -> tuple[int, int] | None:
    """(line number, fields) of the first row of a CSV file with another number of fields than its header;
    rows holding a quote character are not counted (a quoted field may hold the separator)."""
    sep = "\t" if path.lower().endswith(".tsv") else ","
    lines = pl.scan_csv(path, has_header=False, separator="\x1f", quote_char=None, new_columns=["line"],
                        schema={"line": pl.String}).with_row_index("n", offset=1)
    bad = (lines.filter(~pl.col("line").str.contains('"', literal=True))
           .with_columns(fields=pl.col("line").str.count_matches(sep, literal=True) + 1)
           .filter(pl.col("fields") != n_fields).head(1).collect(engine="streaming"))
    return (int(bad["n"][0]), int(bad["fields"][0])) if len(bad) else None


def polars_problem(exc: Exception, source: str) -> DataError:
    """A polars failure while reading the log as a DataError (the first line of polars' message)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = ""
    if "could not parse" in first or "conversion" in first:
        hint = " (a CSV column's type is guessed from its first rows; a later row holds another kind of value)"
    elif "more fields" in first:
        hint = " (a ragged CSV row)"
    return DataError([f"cannot read the log: {first}{hint}"], source=source)
