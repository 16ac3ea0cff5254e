"""The charts of `specc report`: training curves, throughput, and the popularity of recommended items.

Each function takes plain data (records of log.jsonl, counts) and returns a matplotlib Figure; nothing here
reads files or uses pyplot's global state.
"""
from __future__ import annotations

import numpy as np
from cycler import cycler
from matplotlib.figure import Figure

PALETTE = ["#3b6ea8", "#e07b39", "#4f9d69", "#b54a6a", "#8a6bbd", "#c9a227", "#4aa3b5", "#7a7a7a"]
STYLE = {"axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
         "axes.prop_cycle": cycler(color=PALETTE), "font.size": 10, "axes.titlesize": 11,
         "axes.titleweight": "bold", "legend.frameon": False, "figure.dpi": 110}


def metric_groups(epochs: list[dict]) -> dict[str, list[str]]:
    """Validation metrics of the epoch records: ranking ("ndcg@10") and per-task ("purchase/auc") keys."""
    names = list(dict.fromkeys(k for e in epochs for k in e))
    groups = {"ranking metrics": [n for n in names if "@" in n], "task metrics": [n for n in names if "/" in n]}
    return {title: group for title, group in groups.items() if group}


def curves(epochs: list[dict]) -> Figure:
    """Training loss and the validation metrics by epoch."""
    groups = metric_groups(epochs) or {"validation metrics": []}
    fig = Figure(figsize=(4.6 * (1 + len(groups)), 3.6), layout="constrained")
    loss_ax, *metric_axes = fig.subplots(1, 1 + len(groups))
    style = "o-" if len(epochs) <= 20 else "-"   # a dot per epoch, while they can be told apart
    loss_ax.plot([e["epoch"] for e in epochs], [e["loss"] for e in epochs], style, color=PALETTE[0], lw=2)
    loss_ax.set(title="training loss (mean over the epoch)", xlabel="epoch", ylabel="loss")
    for ax, (title, names) in zip(metric_axes, groups.items()):
        for name in names:
            points = [(e["epoch"], e[name]) for e in epochs if e.get(name) is not None]
            if points:
                ax.plot(*zip(*points), style, lw=2, label=name)
        ax.set(title=title, xlabel="epoch")
        if names:
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
        else:
            ax.text(0.5, 0.5, "no evaluation data (--eval)", ha="center", va="center", transform=ax.transAxes,
                    color="#777")
    _epoch_axis(epochs, loss_ax, *metric_axes)
    return fig


def _epoch_axis(epochs: list[dict], *axes) -> None:
    """Whole epochs on the x axis, at most about a dozen labelled."""
    ticks = [e["epoch"] for e in epochs]
    for ax in axes:
        ax.set_xticks(ticks if len(ticks) <= 12 else ticks[::max(1, len(ticks) // 10)])
        ax.set_xlim(min(ticks) - 0.5, max(ticks) + 0.5)


def throughput(epochs: list[dict]) -> Figure:
    """Training sessions per second and seconds per epoch."""
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    rate_ax, time_ax = fig.subplots(1, 2)
    x = [e["epoch"] for e in epochs]
    rate_ax.bar(x, [e["sessions_per_s"] for e in epochs], color=PALETTE[2], width=0.6)
    rate_ax.set(title="throughput", xlabel="epoch", ylabel="training sessions / s")
    time_ax.bar(x, [e["seconds"] for e in epochs], color=PALETTE[1], width=0.6)
    time_ax.set(title="time per epoch", xlabel="epoch", ylabel="seconds")
    _epoch_axis(epochs, rate_ax, time_ax)
    return fig


def popularity(data_counts: np.ndarray, recommended_counts: np.ndarray, k: int) -> Figure:
    """The long tail: the share of the data's interactions and of the top-k recommendations that go to the n
    most popular items of the data (cumulative), the same by popularity decile, and the catalog coverage."""
    catalog = len(data_counts) - 1                          # id 0 is padding
    data, recs = data_counts[1:], recommended_counts[1:]
    order = np.argsort(-data, kind="stable")
    rank = np.arange(1, catalog + 1)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    tail_ax, decile_ax = fig.subplots(1, 2, width_ratios=[3, 2])
    tail_ax.plot(rank, np.cumsum(data[order]) / max(data.sum(), 1), color=PALETTE[7], lw=2.2,
                 label="data (interactions)")
    tail_ax.plot(rank, np.cumsum(recs[order]) / max(recs.sum(), 1), color=PALETTE[1], lw=2.2,
                 label=f"recommended (top {k})")
    tail_ax.set(title="popularity of recommended items", xlabel="n most popular items of the data",
                ylabel="cumulative share", xscale="log", ylim=(0, 1.02), xlim=(1, catalog))
    tail_ax.legend(loc="lower right")
    deciles = np.array_split(order, 10)
    share = lambda counts: [counts[d].sum() / max(counts.sum(), 1) for d in deciles]  # noqa: E731
    x = np.arange(1, 11)
    decile_ax.bar(x - 0.2, share(data), 0.4, color=PALETTE[7], label="data")
    decile_ax.bar(x + 0.2, share(recs), 0.4, color=PALETTE[1], label="recommended")
    covered = int((recs > 0).sum())
    decile_ax.set(title=f"coverage@{k}: {covered:,} of {catalog:,} items ({covered / catalog:.0%})",
                  xlabel="popularity decile of the catalog (1 = most popular)", ylabel="share", xticks=x)
    decile_ax.legend()
    return fig
