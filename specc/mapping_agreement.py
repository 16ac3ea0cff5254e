"""Runs and data prepared apart must mean the same items by the same ids.

A model sees ids; `specc data prepare` decides which raw value each id stands for. Data prepared on its own (not
with `--categories` from the run's preparation) numbers its values afresh, so its id 5 can be another item than
the run's id 5: evaluating, recommending, scoring or warm-starting across the two would be silently wrong. Where
both sides carry their mappings (RUN_DIR/categories, DIR/categories), every id known to both must stand for the
same raw value; ids only one side has (a catalog that grew) are left to the schema's id-range checks.
"""
from __future__ import annotations

from pathlib import Path

from specc.errors import DataError
from specc.mappings import CATEGORIES, Mapping, find_categories

_SHOWN = 3


def require_same_ids(run_dir, data) -> None:
    """DataError naming each column whose ids mean other values in `data`'s preparation than in the run's."""
    _compare(Path(run_dir) / CATEGORIES, data, f"the run {run_dir} was trained with")


def require_same_preparation(train_data, eval_data) -> None:
    """The same for validation data against the training data."""
    ours = find_categories(train_data)
    if ours is not None:
        _compare(ours, eval_data, f"the training data {train_data} has")


def _compare(ours: Path, data, against: str) -> None:
    theirs = find_categories(data)
    if theirs is None or not ours.is_dir() or ours.resolve() == theirs.resolve():
        return
    problems = []
    for file in sorted(ours.glob("*.parquet")):
        if (theirs / file.name).is_file():
            problems += _disagreement(Mapping.load(ours.parent, file.stem), Mapping.load(theirs.parent, file.stem))
    if problems:
        raise DataError(problems + [
            f"{data} was prepared with other id mappings than {against} ({theirs} against {ours}): prepare it with "
            f"`specc data prepare ... --categories {ours}` so that its ids mean the same items"], source=str(data))


def _disagreement(run: Mapping, data: Mapping) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc
    n = min(len(run.values), len(data.values))
    a, b = run.values.slice(0, n), data.values.slice(0, n)
    if a.type != b.type:   # e.g. string and large_string, int32 and int64: compared as the run's type
        try:
            b = b.cast(a.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return [f"{run.column!r}: raw values of type {a.type} in the run, {b.type} in the data"]
    same = pc.fill_null(pc.equal(a, b), False)
    both_null = pc.and_(a.is_null(), b.is_null())
    differ = pc.invert(pc.or_(same, both_null))
    count = pc.sum(differ).as_py() or 0
    if not count:
        return []
    where = pc.indices_nonzero(differ).slice(0, _SHOWN).to_pylist()
    shown = "; ".join(f"id {i} is {b[i].as_py()!r} in the data, {a[i].as_py()!r} in the run" for i in where)
    return [f"{run.column!r}: {count:,} id(s) stand for other values ({shown}{' ...' if count > _SHOWN else ''})"]
