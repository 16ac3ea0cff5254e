"""tasks: each task's plan (loss, metrics, head shapes); next_item's negatives and cut-offs against the catalog."""
from __future__ import annotations

from specc import spec as S
from specc.check.context import Context
from specc.plan import RTD_LOSS_NAME, BodyPlan, InputsPlan, LossPlan, TaskPlan
from specc.schema import Column


def resolve_tasks(ctx: Context, item: Column | None, inputs: InputsPlan | None,
                  body: BodyPlan | None) -> list[TaskPlan]:
    plans = []
    next_items = [i for i, t in enumerate(ctx.spec.tasks) if t.kind == "next_item"]
    for extra in next_items[1:]:
        ctx.error(f"$.tasks[{extra}]", "duplicate_task", "only one next_item task is supported per model")
    for i, (task, name) in enumerate(zip(ctx.spec.tasks, _task_names(ctx))):
        if task.kind == "next_item":
            if item is None or i != next_items[0]:
                continue
            _check_negatives(ctx, i, task, item)
            _check_protocol(ctx, i, task, item)
            _check_cutoffs(ctx, i, task, item)
            if inputs is not None and body is not None:
                plans.append(_next_item(task, name, item, inputs, body))
        elif task.target in ctx.schema:
            col = ctx.schema[task.target]
            metrics = tuple(dict.fromkeys(task.metrics))
            plans.append(TaskPlan(name, task.kind, task.weight, col.name, metrics, summary=task.summary))
    return plans


def _task_names(ctx: Context) -> list[str]:
    """Each task's name (default: its kind), a repeat numbered `_1`, `_2`, ...; the rtd loss's name is reserved."""
    names, used = [], set()
    for i, task in enumerate(ctx.spec.tasks):
        name = task.name or task.kind
        if name == RTD_LOSS_NAME and ctx.spec.masking.kind == "rtd":
            ctx.error(f"$.tasks[{i}].name", "reserved_task_name",
                      f"{name!r} names the discriminator loss of rtd masking", "pick another task name")
        if name in used:
            k = 1
            while f"{name}_{k}" in used:
                k += 1
            name = f"{name}_{k}"
        used.add(name)
        names.append(name)
    return names


def _check_negatives(ctx: Context, i: int, task: S.NextItemTask, item: Column) -> None:
    loss = task.loss
    negatives = getattr(loss, "negatives", 0)
    uses_negatives = not (loss.kind == "sampled_softmax" and loss.sampler == "in_batch")
    if uses_negatives and negatives >= item.cardinality - 1:
        ctx.error(f"$.tasks[{i}].loss.negatives", "too_many_negatives",
                  f"{negatives} negatives but the catalog has only {item.cardinality - 1} items",
                  "use cross_entropy over the full catalog, or fewer negatives", item.name)


def _check_protocol(ctx: Context, i: int, task: S.NextItemTask, item: Column) -> None:
    """The sampled protocol draws its negatives among the items a sequence does not hold: the catalog must have
    that many left after the longest sequence, and a cut-off cannot exceed the candidates."""
    protocol = task.sampled_protocol
    if protocol is None:
        for key in ("negatives", "seed"):
            if key in task.metrics:
                ctx.error(f"$.tasks[{i}].metrics.{key}", "sampled_only", f"{key} is a setting of the sampled "
                          "protocol, but this task ranks over the full catalog", 'add "protocol": "sampled" to '
                          f"the metrics, or leave {key} out")
        return
    n, window = protocol["negatives"], ctx.spec.inputs.max_sequence_length + 1
    if n > item.cardinality - 1 - window:
        ctx.error(f"$.tasks[{i}].metrics.negatives", "too_many_negatives",
                  f"{n} sampled negatives, but a sequence of {window} items leaves only "
                  f"{max(0, item.cardinality - 1 - window)} of the catalog's {item.cardinality - 1} items unseen",
                  "use fewer negatives, or the full protocol", item.name)
    for name, cutoffs in task.cutoffs.items():
        if max(cutoffs) > n + 1:
            ctx.error(f"$.tasks[{i}].metrics.{name}", "shape_mismatch",
                      f"cut-off {max(cutoffs)} is larger than the {n + 1} candidates of the sampled protocol",
                      f"use cut-offs up to {n + 1}")


RANKED_WITHOUT_CHECK = 1000


def _check_cutoffs(ctx: Context, i: int, task: S.NextItemTask, item: Column) -> None:
    """A cut-off beyond the catalog ranks all of it (recall@20 of 11 items is recall@11), which the default
    cut-offs do on tiny catalogs; one beyond both the catalog and RANKED_WITHOUT_CHECK is a mistake."""
    if task.sampled_protocol is not None:
        return
    for name, cutoffs in task.cutoffs.items():
        for j, c in enumerate(cutoffs):
            if c > max(item.cardinality - 1, RANKED_WITHOUT_CHECK):
                ctx.error(f"$.tasks[{i}].metrics.{name}[{j}]", "cutoff_too_large",
                          f"{name}@{c} ranks more items than the catalog's {item.cardinality - 1}",
                          f"use a cut-off of at most {item.cardinality - 1}", item.name)


def _next_item(task: S.NextItemTask, name: str, item: Column, inputs: InputsPlan, body: BodyPlan) -> TaskPlan:
    loss = task.loss
    table = next(t for t in inputs.tables if item.name in t.columns)
    projection = None
    if task.weight_tying and body.output_width != table.dim:
        projection = (body.output_width, table.dim)
    metrics = {k: tuple(sorted(set(v))) for k, v in task.cutoffs.items()}
    loss_plan = LossPlan(loss.kind, label_smoothing=getattr(loss, "label_smoothing", 0.0),
                         negatives=getattr(loss, "negatives", 0), sampler=getattr(loss, "sampler", None),
                         logq_correction=getattr(loss, "logq_correction", False), t=getattr(loss, "t", 0.0))
    return TaskPlan(name, "next_item", task.weight, item.name, metrics, n_items=item.cardinality,
                    table=table.name if task.weight_tying else None, output_projection=projection,
                    temperature=task.temperature, loss=loss_plan, sampled=task.sampled_protocol)
