"""The candidate items `specc score` scores: where they come from (a list column of the data, read row by row beside
the model's batches, or one list for every row) and how they become the model's ids (through the run's id mapping
for raw values, checked against the catalog for the model's own ids).

Problems are collected, not raised one at a time, so a run reports every bad candidate of every row at once."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from specc.errors import DataError, UserError
from specc.mappings import OOV, Mapping

SHOWN = 10   # problems listed in the error; the rest are counted


class CandidateColumn:
    """A list column of the data's `files`, read in row order: `take(rows)` gives the lists of increasing source
    rows (counted over the files in order, as `SequenceDataset.indexed_batches` numbers them). Memory: one row
    group of the column; row groups before the rows asked for are skipped unread."""

    def __init__(self, files: list[str], column: str, source: str):
        import pyarrow.parquet as pq
        problems = []
        for f in files:
            schema = pq.read_schema(f)
            if column not in schema.names:
                problems.append(f"{f}: no column {column!r} for --candidates (it has {', '.join(schema.names)})")
            elif not _is_list_of_values(schema.field(column).type):
                problems.append(f"{f}: --candidates column {column!r} holds {schema.field(column).type}, not lists "
                                "of items")
        if problems:
            raise DataError(problems, source=source)
        self.column = column
        self._groups = self._row_groups(files)
        self._first, self._lists = 0, []

    def take(self, rows: np.ndarray) -> list[list]:
        out = []
        for row in rows.tolist():
            while row >= self._first + len(self._lists):
                self._first, self._lists = self._next_group_holding(row)
            out.append(self._lists[row - self._first] or [])   # a null list: no candidates
        return out

    def _next_group_holding(self, row: int) -> tuple[int, list]:
        for first, n, read in self._groups:
            if row < first + n:
                return first, read()
        raise RuntimeError(f"the --candidates column ended before row {row}: did the data change while read?")

    def _row_groups(self, files) -> Iterator[tuple[int, int, object]]:
        import pyarrow.parquet as pq
        first = 0
        for f in files:
            with pq.ParquetFile(f) as file:
                sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
            for g, n in enumerate(sizes):
                yield first, n, lambda f=f, g=g: _read_group(f, g, self.column)
                first += n


def _is_list_of_values(kind) -> bool:
    import pyarrow as pa
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and not pa.types.is_nested(kind.value_type)


def _read_group(path: str, group: int, column: str) -> list:
    import pyarrow.parquet as pq
    with pq.ParquetFile(path) as file:
        return file.read_row_group(group, columns=[column]).column(0).to_pylist()


class SameCandidates:
    """One list of candidates for every row."""

    def __init__(self, values: list):
        self.values = values

    def take(self, rows: np.ndarray) -> list[list]:
        return [self.values] * len(rows)


class CandidateIds:
    """Candidates (raw values with a `mapping`, the model's ids without) -> the model's ids, 1..n_items-1."""

    def __init__(self, mapping: Mapping | None, n_items: int):
        self.mapping, self.n_items = mapping, n_items
        self.problems: list[str] = []
        self.n_problems = self.n_oov = 0

    @classmethod
    def for_run(cls, run_dir, column: str, n_items: int, ids: str | None) -> "CandidateIds":
        """Raw values by default where the run has a mapping of `column`, the model's ids with ids="internal"."""
        mapping = None if ids == "internal" else Mapping.load(run_dir, column)
        if ids == "raw" and mapping is None:
            raise UserError(f"{run_dir} has no id mapping for {column!r} (it was not trained on data prepared by "
                            "`specc data prepare`); use --ids internal")
        return cls(mapping, n_items)

    def parse(self, text: str) -> list:
        """`--items A,B,C` as values of the candidates' kind: integers, or the mapping's strings."""
        import pyarrow as pa
        texts = [t.strip() for t in text.split(",")]
        if not all(texts):
            raise UserError(f"--items {text!r}: give item ids separated by commas, with none empty")
        kind = None if self.mapping is None else self.mapping.value_type
        if kind is not None and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            return self._checked(texts)
        if kind is not None and not pa.types.is_integer(kind):
            raise UserError(f"--items: the run's raw item values are {kind}, which a command line cannot spell; "
                            "use --candidates with a column of them, or --ids internal")
        try:
            values = [int(t) for t in texts]
        except ValueError:
            raise UserError(f"--items {text!r}: item ids here are integers"
                            f"{' (the model ids: --ids internal)' if self.mapping is None else ''}") from None
        return self._checked(values)

    def _checked(self, values: list) -> list:
        bad = [v for v, i in zip(values, self._ids(values, count=False)) if not 1 <= i < self.n_items]
        if bad:
            raise UserError(f"--items: {', '.join(map(repr, bad))} {self._unknown(len(bad))}")
        return values

    def encode(self, lists: list[list], rows: np.ndarray) -> list[list[int]]:
        """The model's ids of each row's candidates; a row with an unknown candidate gets none, and a problem
        naming its source row and those values."""
        out = []
        for row, values in zip(rows.tolist(), lists):
            ids = self._ids(values)
            bad = [v for v, i in zip(values, ids) if not 1 <= i < self.n_items]
            if bad:
                self._problem(f"row {row}: {', '.join(map(repr, bad[:5]))}{' ...' if len(bad) > 5 else ''} "
                              f"{self._unknown(len(bad))}")
                ids = []
            out.append(ids)
        return out

    def _ids(self, values: list, count: bool = True) -> list[int]:
        if self.mapping is None:
            return [v if isinstance(v, int) and not isinstance(v, bool) else -1 for v in values]
        ids = self.mapping.lookup(values)
        if count and self.mapping.oov:
            self.n_oov += int((ids == OOV).sum())
        return ids.tolist()

    def _problem(self, message: str) -> None:
        self.n_problems += 1
        if len(self.problems) < SHOWN:
            self.problems.append(message)

    def _unknown(self, n: int) -> str:
        if self.mapping is None:
            what = "is not an item id" if n == 1 else "are not item ids"
            return f"{what} of the model's catalog (1..{self.n_items - 1}; 0 is padding)"
        return f"{'is' if n == 1 else 'are'} unknown to the run's mapping of {self.mapping.column!r}"
