"""Full-catalog evaluation of a model on a dataset (see README, "Evaluation protocol").

Metrics are accumulated as sums and counts (`accumulate`) and turned into values at the end (`compute`); in a
distributed run each process scores its share of the data and the sums are added up over the processes first
(`specc.metrics.all_reduce`), so the metrics equal those of one process scoring all of it."""
from __future__ import annotations

import torch

from specc.metrics import MetricAccumulator, all_reduce


def open_for(model, path: str, schema, min_length: int, with_targets: bool = True, context=None,
             whole_rows: bool = False):
    """The dataset at `path` with the columns `model` reads (and its targets): this process's share of it in a
    distributed run (`context`, a `specc.distributed` context). Each row keeps the model's window, its most recent
    max_sequence_length items, or all of them with `whole_rows` (what `exclude_seen` reads)."""
    return _open(model, path, schema, min_length, with_targets, context, None if whole_rows else model.max_length)


def open_evaluation(model, path: str, schema, exclude_seen: bool = False, context=None):
    """The dataset at `path` as the eval protocol reads it: for each row, its last item (the target) and the
    max_sequence_length items before it, the context `recommend` reads for the row without that item; whole rows
    where the items seen before the window matter too (`exclude_seen`, the sampled protocol's negatives)."""
    task = model.plan.next_item
    if task is None:
        return _open(model, path, schema, 1, True, context, model.max_length)
    whole = exclude_seen or bool(task.sampled)
    dataset = _open(model, path, schema, 2, True, context, None if whole else model.max_length + 1)
    if task.sampled:
        _require_unseen_items(dataset, model.sequence_column, task.n_items, path, context)
    return dataset


def _require_unseen_items(dataset, column: str, n_items: int, path: str, context) -> None:
    """The sampled protocol draws negatives among the items a row has not seen: a row that holds the whole catalog
    leaves none. Found before any training, on every process alike."""
    from specc.errors import DataError
    from specc.sampled_eval import unseen_count
    mine = [int(r) for rows, batch in dataset.indexed_batches(4096)
            for r in rows[(unseen_count(batch[column], n_items) < 1).numpy()]]
    every = sorted(r for part in (context.all_gather_object(mine) if context else [mine]) for r in part)
    if every:
        shown = ", ".join(map(str, every[:10])) + (" ..." if len(every) > 10 else "")
        raise DataError([f"{len(every)} row(s) ({shown}) hold every item of the catalog ({n_items - 1}): the sampled "
                         "protocol has no unseen item to draw their negatives from; leave them out or use the full "
                         "protocol"], source=path)


def _open(model, path, schema, min_length, with_targets, context, max_length):
    from specc.data import open_dataset
    columns = model.input_columns + (model.target_columns if with_targets else [])
    return open_dataset(path, schema, columns, item_column=model.sequence_column,
                        max_length=max_length, min_length=min_length,
                        rank=context.rank if context else 0, world_size=context.world_size if context else 1,
                        exchange=context.all_gather_object if context else None)


def accumulators_for(plan) -> dict[str, MetricAccumulator]:
    """One empty accumulator per task, by task name."""
    out = {}
    for t in plan.tasks:
        if t.kind == "next_item":
            out[t.name] = MetricAccumulator(ranking=t.metrics)
        elif t.kind == "binary_classification":
            out[t.name] = MetricAccumulator(classification=t.metrics, prefix=t.name)
        else:
            out[t.name] = MetricAccumulator(regression=t.metrics, prefix=t.name)
    return out


def accumulate(model, dataset, batch_size: int = 512, exclude_seen: bool = False,
               device: str = "cpu") -> dict[str, MetricAccumulator]:
    """Every task's metric sums over `dataset` (opened by `open_evaluation`): each sequence's last item predicted
    from the items before it."""
    plan = model.plan
    task = plan.next_item
    k = max((c for cs in task.metrics.values() for c in cs), default=1) if task else 1
    accumulators = accumulators_for(plan)
    kinds = {t.name: t.kind for t in plan.tasks}
    model.eval()
    with torch.no_grad():
        for batch in dataset.batches(batch_size, shuffle=False):
            batch = {c: v.to(device) for c, v in batch.items()}
            for name, (pred, label) in model.evaluate_batch(batch, k=k, exclude_seen=exclude_seen).items():
                acc = accumulators[name]
                update = {"next_item": acc.update_ranking, "binary_classification": acc.update_classification}
                update.get(kinds[name], acc.update_regression)(pred, label)
    return accumulators


def compute(accumulators: dict[str, MetricAccumulator]) -> dict:
    """Flat metrics (`"ndcg@10"`, `"<task>/auc"`, ...) from the accumulated sums."""
    metrics: dict = {}
    for acc in accumulators.values():
        metrics.update(acc.compute())
    return metrics


def evaluate(model, dataset, batch_size: int = 512, exclude_seen: bool = False, device: str = "cpu",
             context=None) -> dict:
    """Full-catalog metrics of `model` on `dataset` (on every share of it, with a distributed `context`)."""
    accumulators = accumulate(model, dataset, batch_size, exclude_seen, device)
    if context is not None:
        all_reduce(list(accumulators.values()), context)
    return compute(accumulators)
