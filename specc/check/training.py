"""training: what the training part refers to in the rest of the plan (the metric early stopping selects by)."""
from __future__ import annotations

from specc.check.context import Context
from specc.errors import did_you_mean
from specc.plan import TaskPlan


def metric_keys(tasks: list[TaskPlan]) -> list[str]:
    """The keys evaluation reports (`"ndcg@10"`, `"<task>/auc"`, ...), in the order of the tasks."""
    keys = []
    for t in tasks:
        if t.kind == "next_item":
            keys += [f"{name}@{k}" for name, ks in t.metrics.items() for k in ks]
        else:
            keys += [f"{t.name}/{name}" for name in t.metrics]
    return keys


def check_training(ctx: Context, tasks: list[TaskPlan]) -> None:
    es = ctx.spec.training.early_stopping
    if es is None or not tasks:
        return
    keys = metric_keys(tasks)
    if es.metric not in keys:
        ctx.error("$.training.early_stopping.metric", "unknown_metric",
                  f"early stopping selects by {es.metric!r}, which no task reports; they report {', '.join(keys)}",
                  did_you_mean(es.metric, keys) or f"use one of {', '.join(keys[:4])}")
