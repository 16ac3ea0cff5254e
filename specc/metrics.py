"""Evaluation metrics: ranking metrics from top-k ids, classification and regression metrics.

Pure torch, no merlin. Ranking metrics are computed from the ``[B, k]`` ids of each row's top-k
items (``model.recommend``) and the ``[B]`` target ids — never from a dense ``[B, catalog]``
score or one-hot label matrix, so evaluation memory does not grow with the catalog.

Ranking metrics (one relevant item per row, as in next-item prediction)
-----------------------------------------------------------------------
Let ``r`` be the 1-based position of the target in the row's top-k ids (its first occurrence;
ids < 0, e.g. ``-1`` padding when the catalog has fewer than k items, are "no item" and never
match), and ``r = ∞`` when the target is not among them. For a cut-off ``c <= k``, with
``hit = [r <= c]``:

=============  ============================  =================================================
name           value per row                 Transformers4Rec 23.12 (``ranking_metric.py``)
=============  ============================  =================================================
``recall@c``   ``hit``                       ``RecallAt``: relevant items in top-c / relevant
                                             items (= 1 here); the hit rate
``precision@c`` ``hit / c``                  ``PrecisionAt``: relevant items in top-c / c
``ndcg@c``     ``hit / log2(r + 1)``         ``NDCGAt``: DCG@c with discounts
                                             ``1/log2(j + 1)`` over the top-c labels, divided by
                                             the ideal DCG (1 for one relevant item)
``mrr@c``      ``hit / r``                   ``MeanReciprocalRankAt``: max over j <= c of
                                             ``label_j / j``
``map@c``      ``hit / r``                   ``AvgPrecisionAt``: ``sum_{j<=c} precision@j ·
                                             label_j / clamp(#relevant, 1, c)``; with one
                                             relevant item at rank r this is ``(1/r) / 1``, so
                                             MAP@c equals MRR@c
=============  ============================  =================================================

The reported value of each metric is the mean of the per-row values over every row evaluated
(T4Rec's ``RankingMetric.compute`` concatenates the per-row values of all batches and takes
their mean), so the mean over batches equals the mean over their concatenation. T4Rec ranks by
``torch.topk`` over the scores and ignores ties; here the order of the given ids decides, and a
target id that appears more than once counts once, at its first position.

Classification (binary; ``probs`` in [0, 1], ``labels`` 0/1)
------------------------------------------------------------
``auc``: the exact area under the ROC curve over every example seen, computed from ranks
(Mann–Whitney U): ``(sum of the positives' ranks - P(P+1)/2) / (P·N)`` with tied scores given
their average rank (so a tie between a positive and a negative counts 1/2); NaN when only one
class was seen. ``accuracy``, ``precision`` (TP / (TP+FP), 0 when nothing is predicted
positive), ``recall`` (TP / (TP+FN), 0 when there is no positive) with a prediction being
positive when ``prob > 0.5`` (torchmetrics' binary threshold, which T4Rec uses).

Regression
----------
``rmse = sqrt(mean((pred - target)^2))`` and ``mae = mean(|pred - target|)`` over every example
seen (not a mean of per-batch values).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "RANKING_METRICS", "CLASSIFICATION_METRICS", "REGRESSION_METRICS",
    "ranking_metrics", "binary_auc", "MetricAccumulator", "all_reduce",
]

RANKING_METRICS = ("ndcg", "recall", "mrr", "precision", "map")
CLASSIFICATION_METRICS = ("auc", "accuracy", "precision", "recall")
REGRESSION_METRICS = ("rmse", "mae")
CLASSIFICATION_THRESHOLD = 0.5


def _check_cutoffs(cutoffs: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name, ks in cutoffs.items():
        if name not in RANKING_METRICS:
            raise ValueError(f"unknown ranking metric {name!r}; choose from {', '.join(RANKING_METRICS)}")
        if isinstance(ks, int):
            ks = [ks]
        ks = list(ks)
        if not ks:
            raise ValueError(f"ranking metric {name!r} has no cut-off")
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"cut-off of {name!r} must be a positive integer, got {k!r}")
        out[name] = ks
    return out


def _max_cutoff(cutoffs: Mapping[str, Sequence[int]]) -> int:
    return max((k for ks in cutoffs.values() for k in ks), default=0)


def ranking_metrics(top_ids: Tensor, target: Tensor,
                    cutoffs: Mapping[str, Sequence[int]]) -> dict[str, Tensor]:
    """Per-row ranking metrics for one relevant item per row.

    top_ids: ``[B, k]`` integer ids, best first; ids < 0 mean "no item".
    target: ``[B]`` integer ids of the relevant item.
    cutoffs: metric name -> cut-offs, e.g. ``{"ndcg": [10, 20], "recall": [10]}``.
    Returns ``{"ndcg@10": Tensor[B] (float32), ...}``. Raises ValueError when k is smaller than
    the largest cut-off, on unknown names or bad shapes.
    """
    cutoffs = _check_cutoffs(cutoffs)
    if top_ids.dim() != 2:
        raise ValueError(f"top_ids must be [B, k], got shape {tuple(top_ids.shape)}")
    target = target.reshape(-1)
    if target.shape[0] != top_ids.shape[0]:
        raise ValueError(f"target has {target.shape[0]} rows, top_ids {top_ids.shape[0]}")
    k = top_ids.shape[1]
    max_k = _max_cutoff(cutoffs)
    if k < max_k:
        raise ValueError(f"top_ids has k={k} columns but the largest cut-off is {max_k}; "
                         f"ask for at least {max_k} items")
    if top_ids.is_floating_point() or target.is_floating_point():
        raise ValueError("top_ids and target must be integer tensors")

    target = target.to(top_ids.device, top_ids.dtype)
    if k == 0:  # no cut-offs asked for (k >= max cut-off was checked above)
        return {}
    hits = (top_ids == target[:, None]) & (top_ids >= 0)                 # [B, k]
    found = hits.any(dim=1)
    # first True per row (argmax returns the first maximum; 0 when the row has none)
    first = hits.to(torch.uint8).argmax(dim=1) if hits.shape[0] else torch.zeros(0, dtype=torch.long)
    # 1-based rank of the target; k + 1 stands for "not in the top k".
    rank = torch.where(found, first + 1, torch.full_like(first, k + 1)).to(torch.float32)

    out: dict[str, Tensor] = {}
    for name, ks in cutoffs.items():
        for c in ks:
            hit = (rank <= c).to(torch.float32)
            if name == "recall":
                value = hit
            elif name == "precision":
                value = hit / float(c)
            elif name == "ndcg":
                value = hit / torch.log2(rank + 1.0)
            else:  # "mrr", "map": equal for one relevant item (see the module docstring)
                value = hit / rank
            out[f"{name}@{c}"] = value
    return out


def binary_auc(probs: Tensor, labels: Tensor) -> float:
    """Exact ROC AUC by ranks (Mann–Whitney U), ties given their average rank; NaN with one class."""
    probs = probs.reshape(-1).to(torch.float64)
    labels = labels.reshape(-1).to(torch.float64) > 0.5
    n = probs.numel()
    n_pos = int(labels.sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(probs)
    sorted_probs = probs[order]
    # average 1-based rank of each group of equal scores
    _, inverse, counts = torch.unique_consecutive(sorted_probs, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)           # last 1-based rank in each group
    avg_rank = ends - (counts.to(torch.float64) - 1.0) / 2.0
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = avg_rank[inverse]
    sum_pos = float(ranks[labels].sum())
    return (sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


class MetricAccumulator:
    """Streams metrics over evaluation batches; ``compute()`` returns flat ``{"ndcg@10": float}``.

    ranking: metric name -> cut-offs (``{"ndcg": [10, 20], "recall": [10, 20]}``).
    classification: names among ``auc, accuracy, precision, recall``.
    regression: names among ``rmse, mae``.
    prefix: prepended to every key as ``"<prefix>/<key>"`` when not empty.

    Ranking metrics keep a running sum per key (float64); classification keeps the probabilities
    and labels seen (on the CPU) so that the AUC is exact; regression keeps running sums.
    """

    def __init__(self, ranking: Mapping[str, Sequence[int]] | None = None,
                 classification: Sequence[str] = (), regression: Sequence[str] = (),
                 prefix: str = ""):
        self.ranking = _check_cutoffs(ranking or {})
        self.max_k = _max_cutoff(self.ranking)
        for name in classification:
            if name not in CLASSIFICATION_METRICS:
                raise ValueError(f"unknown classification metric {name!r}; choose from "
                                 f"{', '.join(CLASSIFICATION_METRICS)}")
        for name in regression:
            if name not in REGRESSION_METRICS:
                raise ValueError(f"unknown regression metric {name!r}; choose from "
                                 f"{', '.join(REGRESSION_METRICS)}")
        self.classification = list(classification)
        self.regression = list(regression)
        self.prefix = prefix
        self.reset()

    def reset(self) -> None:
        self._rank_sums: dict[str, float] = {}
        self._rank_count = 0
        self._probs: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._sq_err = 0.0
        self._abs_err = 0.0
        self._reg_count = 0

    # ---- updates ------------------------------------------------------------------------------
    def update_ranking(self, top_ids: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Adds a batch: top_ids ``[B, k]``, target ``[B]``; mask ``[B]`` (bool) keeps only some rows."""
        if not self.ranking:
            return
        target = target.reshape(-1)
        if mask is not None:
            mask = mask.reshape(-1).to(torch.bool).to(top_ids.device)
            top_ids, target = top_ids[mask], target.to(top_ids.device)[mask]
        values = ranking_metrics(top_ids, target, self.ranking)
        for key, v in values.items():
            self._rank_sums[key] = self._rank_sums.get(key, 0.0) + float(v.to(torch.float64).sum())
        self._rank_count += int(target.shape[0])

    def update_classification(self, probs: Tensor, labels: Tensor) -> None:
        """Adds a batch of probabilities ``[B]`` in [0, 1] and 0/1 labels ``[B]``."""
        probs = probs.detach().reshape(-1).to("cpu", torch.float64)
        labels = labels.detach().reshape(-1).to("cpu", torch.float64)
        if probs.shape != labels.shape:
            raise ValueError(f"probs has {probs.numel()} values, labels {labels.numel()}")
        self._probs.append(probs)
        self._labels.append(labels)

    def update_regression(self, preds: Tensor, targets: Tensor) -> None:
        """Adds a batch of predictions ``[B]`` and targets ``[B]``."""
        preds = preds.detach().reshape(-1).to(torch.float64)
        targets = targets.detach().reshape(-1).to(preds.device, torch.float64)
        if preds.shape != targets.shape:
            raise ValueError(f"preds has {preds.numel()} values, targets {targets.numel()}")
        err = preds - targets
        self._sq_err += float((err * err).sum())
        self._abs_err += float(err.abs().sum())
        self._reg_count += int(err.numel())

    # ---- running sums, for adding up accumulators of several processes --------------------------
    def sums(self) -> dict[str, float]:
        """Every running sum and count, by name: what `load_sums` takes back once summed over processes.
        Classification keeps examples instead (the AUC is exact), see `examples`."""
        out = {f"rank/{k}": v for k, v in self._rank_sums.items()}
        out.update({"rank_count": float(self._rank_count), "sq_err": self._sq_err, "abs_err": self._abs_err,
                    "reg_count": float(self._reg_count)})
        for name, ks in self.ranking.items():   # a key no batch produced yet is a zero sum, so every rank has it
            for c in ks:
                out.setdefault(f"rank/{name}@{c}", 0.0)
        return out

    def load_sums(self, sums: Mapping[str, float]) -> None:
        """Replace the running sums and counts by `sums` (e.g. `sums()` added up over every process)."""
        self._rank_sums = {k[len("rank/"):]: float(v) for k, v in sums.items() if k.startswith("rank/")}
        self._rank_count = int(round(sums["rank_count"]))
        self._sq_err, self._abs_err = float(sums["sq_err"]), float(sums["abs_err"])
        self._reg_count = int(round(sums["reg_count"]))

    def examples(self) -> tuple[Tensor, Tensor]:
        """The classification probabilities and labels seen, float64 on the CPU."""
        if not self._probs:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        return torch.cat(self._probs), torch.cat(self._labels)

    def load_examples(self, probs: Tensor, labels: Tensor) -> None:
        self._probs, self._labels = [probs], [labels]

    # ---- result -------------------------------------------------------------------------------
    def compute(self) -> dict[str, float]:
        """Flat metrics over everything seen since construction or ``reset()``; NaN where no data."""
        out: dict[str, float] = {}
        for name, ks in self.ranking.items():
            for c in ks:
                key = f"{name}@{c}"
                out[key] = (self._rank_sums[key] / self._rank_count) if self._rank_count else float("nan")
        if self.classification:
            out.update(self._classification())
        if self.regression:
            n = self._reg_count
            if "rmse" in self.regression:
                out["rmse"] = math.sqrt(self._sq_err / n) if n else float("nan")
            if "mae" in self.regression:
                out["mae"] = self._abs_err / n if n else float("nan")
        if self.prefix:
            out = {f"{self.prefix}/{k}": v for k, v in out.items()}
        return out

    def _classification(self) -> dict[str, float]:
        nan = float("nan")
        probs, labels = self.examples()
        n = probs.numel()
        pred = probs > CLASSIFICATION_THRESHOLD
        true = labels > 0.5
        tp = int((pred & true).sum())
        fp = int((pred & ~true).sum())
        fn = int((~pred & true).sum())
        tn = n - tp - fp - fn
        values = {
            "auc": binary_auc(probs, labels) if n else nan,
            "accuracy": (tp + tn) / n if n else nan,
            "precision": (tp / (tp + fp) if tp + fp else 0.0) if n else nan,
            "recall": (tp / (tp + fn) if tp + fn else 0.0) if n else nan,
        }
        return {name: values[name] for name in self.classification}


def all_reduce(accumulators: Sequence[MetricAccumulator], context) -> None:
    """Add up, in place, what the accumulators of every process of `context` (a `specc.distributed` context) have
    seen, so that `compute()` gives on every rank the metrics of all ranks' data together: sums and counts in one
    all-reduce, classification examples gathered (the AUC is exact). Every rank passes the same accumulators."""
    if context.world_size == 1:
        return
    local = {f"{i}/{k}": v for i, acc in enumerate(accumulators) for k, v in acc.sums().items()}
    total = context.all_reduce_sum(local)
    for i, acc in enumerate(accumulators):
        acc.load_sums({k[len(f"{i}/"):]: v for k, v in total.items() if k.startswith(f"{i}/")})
    judged = [i for i, acc in enumerate(accumulators) if acc.classification]
    if judged:
        every = context.all_gather_object([accumulators[i].examples() for i in judged])
        for j, i in enumerate(judged):
            accumulators[i].load_examples(torch.cat([rank[j][0] for rank in every]),
                                          torch.cat([rank[j][1] for rank in every]))
