"""`specc score`: the model's scores for given candidate items, per row of the data (`Model.score`), instead of
the whole catalog's top k that `specc recommend` ranks.

Candidates are a list column of the data (`--candidates COLUMN`, each row its own) or one list for every row
(`--items A,B,C`). They are raw item values where the run has an id mapping (the default there; `--ids raw`) or the
model's ids (`--ids internal`), and come back as given, in the given order, each with the score `recommend` ranks
that item by for the row. A raw value the mapping does not know is scored as the out-of-vocabulary item where the
item column has one (as `specc data prepare` maps a new item; a note counts them), else it is an error; every bad
candidate of every row is reported at once and nothing is written then. Rows without items get empty lists, as
in `recommend`. Under torchrun each process scores its share and rank 0 writes every row."""
from __future__ import annotations

import torch

from specc.candidates import SHOWN, CandidateColumn, CandidateIds, SameCandidates
from specc.checkpoint import load, run_schema
from specc.commands import in_row_order, write_item_rows
from specc.errors import DataError, UserError
from specc.evaluation import open_for
from specc.mapping_agreement import require_same_ids


def score(args, context, say) -> None:
    model = load(args.run_dir, device=context.device)
    task = model.plan.next_item
    if task is None:
        raise UserError(f"{args.run_dir}: the model has no next_item task to score items with")
    ids = CandidateIds.for_run(args.run_dir, task.target, task.n_items, args.ids)
    same = SameCandidates(ids.parse(args.items)) if args.items is not None else None
    require_same_ids(args.run_dir, args.data)
    dataset = open_for(model, args.data, run_schema(args.run_dir), 1, with_targets=False, context=context)
    given = same or CandidateColumn(dataset.files, args.candidates, args.data)
    if dataset.n_skipped:
        say(f"note: {dataset.n_skipped} of {dataset.n_total} row(s) have no items; their scores are empty")
    mine = []   # (input row, candidates as given, scores) of this process's share
    for rows, batch in dataset.indexed_batches(args.batch_size):
        values = given.take(rows)
        scores = _scores(model, batch, ids.encode(values, rows), context.device)
        mine += list(zip(rows.tolist(), values, scores))
    _stop_on_problems(ids, context, args.data)
    n_oov = sum(context.all_gather_object(ids.n_oov))
    if n_oov:
        say(f"note: {n_oov} candidate(s) unknown to the run's mapping were scored as its out-of-vocabulary item")
    every = context.gather_object(mine)
    if context.is_main:
        write_item_rows(args.out, list(range(dataset.n_total)), *in_row_order(every, dataset.n_total))


def _scores(model, batch, ids: list[list[int]], device) -> list[list[float]]:
    """Each row's scores of its candidates `ids` (rows of any length; padded with item 1 for Model.score)."""
    width = max(map(len, ids), default=0)
    if width == 0:
        return [[] for _ in ids]
    padded = torch.tensor([row + [1] * (width - len(row)) for row in ids], device=device)
    scores = model.score({c: v.to(device) for c, v in batch.items()}, padded).float().cpu().tolist()
    return [s[:len(row)] for s, row in zip(scores, ids)]


def _stop_on_problems(ids: CandidateIds, context, source: str) -> None:
    """Every process's bad candidates, raised on every process as one error (before anything is written)."""
    found = context.all_gather_object((ids.n_problems, ids.problems))
    total = sum(n for n, _ in found)
    if total:
        shown = [p for _, problems in found for p in problems][:SHOWN]
        more = [f"... and {total - len(shown)} more row(s) with such candidates"] if total > len(shown) else []
        raise DataError(shown + more + _internal_hint(ids), source=source, count=total)


def _internal_hint(ids: CandidateIds) -> list[str]:
    """Prepared data hold the model's ids, not raw values: a candidate column of them reads with --ids internal."""
    if ids.mapping is None:
        return []
    return ["candidates are read as raw values of the run's mapping; a column of the model's ids (such as the "
            "item lists `specc data prepare` writes) needs --ids internal"]
