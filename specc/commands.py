"""The `specc train`, `specc evaluate`, `specc recommend` and `specc score` commands: arguments in, results
printed.

Under torchrun each process takes its share of the data; rank 0 alone prints and writes: `evaluate` prints the
metrics of all shares together (sums added up over the processes), `recommend` and `score` gather every process's
rows and write one output."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from specc.checkpoint import load, run_schema
from specc.errors import UserError
from specc.evaluation import evaluate, open_evaluation, open_for
from specc.files import json_text
from specc.lock import refuse_inside_run
from specc.mapping_agreement import require_same_ids
from specc.mappings import raw_item_ids
from specc.run_dir import read_metrics


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _context(args):
    from specc.distributed import from_environment
    from specc.train import resolve_device
    return from_environment(resolve_device(args.device))


def train_command(args) -> int:
    from specc.tracking import Tracking
    from specc.train import run_training
    from specc.train_request import TrainRequest
    request = TrainRequest(args.spec, args.data, args.out, args.eval_data, **{
        k: getattr(args, k) for k in ("schema", "epochs", "batch_size", "lr", "precision", "device", "resume",
                                      "exclude_seen", "eval_every", "max_time", "init_from")},
        progress=not args.quiet, log=_note, tracking=Tracking(args.log_to and tuple(args.log_to), args.tracking_uri))
    with _context(args) as context:
        result = run_training(request, context)
        if context.is_main:
            print(json_text(result, indent=2))
    return 130 if result.get("interrupted") else 0


def evaluate_command(args) -> int:
    with _context(args) as context:
        model = load(args.run_dir, device=context.device)
        require_same_ids(args.run_dir, args.data)
        dataset = open_evaluation(model, args.data, run_schema(args.run_dir), args.exclude_seen, context=context)
        if dataset.n_skipped and context.is_main:
            _note(f"note: skipped {dataset.n_skipped} of {dataset.n_total} sequence(s) too short to evaluate")
        trained_with = _training_protocol(args.run_dir)
        if trained_with is not None and trained_with != args.exclude_seen and context.is_main:
            _note(f"note: the run's own metrics (metrics.json) were evaluated {'with' if trained_with else 'without'} "
                  f"--exclude-seen and these {'with' if args.exclude_seen else 'without'} it, so the two do not "
                  "compare")
        metrics = evaluate(model, dataset, args.batch_size, args.exclude_seen, context.device, context=context)
        metrics["eval_sessions"] = dataset.n_rows
        if context.is_main:
            print(json_text(metrics, indent=2))
    return 0


def _training_protocol(run_dir) -> bool | None:
    """Whether the run's training evaluated with --exclude-seen (None: unknown, e.g. written before it was recorded)."""
    value = (read_metrics(run_dir) or {}).get("exclude_seen")
    return value if isinstance(value, bool) else None


def recommend_command(args) -> int:
    check_out(args.out, args.data)
    with _context(args) as context:
        _recommend(args, context)
    return 0


def score_command(args) -> int:
    from specc.score import score
    check_out(args.out, args.data)
    with _context(args) as context:
        score(args, context, _note if context.is_main else (lambda message: None))
    return 0


def check_out(out: str | None, data: str) -> None:
    """An --out file for rows of items: a new .parquet or JSON lines file, not the input, not inside a run."""
    if out and not out.endswith((".parquet", ".jsonl", ".json")):
        raise UserError(f"--out {out}: use a .parquet file, or .jsonl / .json for JSON lines")
    if out and Path(out).resolve() == Path(data).resolve():
        raise UserError(f"--out {out} is the input data; choose another file")
    if out:
        refuse_inside_run(out)


def _recommend(args, context) -> None:
    device = context.device
    model = load(args.run_dir, device=device)
    if model.plan.next_item is None:
        raise UserError(f"{args.run_dir}: the model has no next_item task to recommend with")
    say = _note if context.is_main else (lambda message: None)
    k = min(args.k, model.plan.next_item.n_items - 1)
    if k < args.k:
        say(f"note: --k {args.k} is more than the catalog's {k} items; returning all {k}")
    require_same_ids(args.run_dir, args.data)
    dataset = open_for(model, args.data, run_schema(args.run_dir), 1, with_targets=False, context=context,
                       whole_rows=args.exclude_seen)
    if dataset.n_skipped:
        say(f"note: {dataset.n_skipped} of {dataset.n_total} row(s) have no items; their recommendations are empty")
    mine = []   # (input row, ids, scores) of this process's share
    for rows, batch in dataset.indexed_batches(args.batch_size):
        scores, ids = model.recommend({c: v.to(device) for c, v in batch.items()}, k=k, exclude_seen=args.exclude_seen)
        for row, s, i in zip(rows.tolist(), scores.cpu().tolist(), ids.cpu().tolist()):
            # with --exclude-seen a row can have fewer than k unseen items: those slots (id -1) are left out
            kept = [(item, score) for item, score in zip(i, s) if item > 0 and math.isfinite(score)]
            mine.append((row, [item for item, _ in kept], [score for _, score in kept]))
    every = context.gather_object(mine)
    if not context.is_main:
        return
    ids_out, scores_out = in_row_order(every, dataset.n_total)
    ids_out = raw_item_ids(args.run_dir, model.plan.next_item.target, ids_out, args.ids)
    write_item_rows(args.out, list(range(dataset.n_total)), ids_out, scores_out)


def in_row_order(shares, n_total: int) -> tuple[list, list]:
    """Every process's (input row, ids, scores) -> ids and scores for each of the `n_total` input rows, by row
    number; rows without items (skipped) get empty lists."""
    ids_out: list = [[] for _ in range(n_total)]
    scores_out: list = [[] for _ in range(n_total)]
    for share in shares:
        for row, ids, scores in share:
            ids_out[row], scores_out[row] = ids, scores
    return ids_out, scores_out


def write_item_rows(out: str | None, rows, ids, scores) -> None:
    """One line (or parquet row) per input row: its row number, item ids and their scores; stdout without `out`."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    if out and out.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"row": rows, "item_ids": ids, "scores": scores}), out)
        return
    lines = (json.dumps({"row": r, "item_ids": i, "scores": [round(x, 6) for x in s]}) for r, i, s in
             zip(rows, ids, scores))
    if out:
        Path(out).write_text("".join(line + "\n" for line in lines))
    else:
        for line in lines:
            print(line)
