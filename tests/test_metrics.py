"""specc.metrics: hand-computed cases, streaming, exact AUC, and Transformers4Rec 23.12's formulas."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from specc.metrics import MetricAccumulator, binary_auc, ranking_metrics

ALL = {"ndcg": [1, 3, 5], "recall": [1, 3, 5], "mrr": [1, 3, 5], "precision": [1, 3, 5], "map": [1, 3, 5]}


def _row(values: dict[str, torch.Tensor], i: int = 0) -> dict[str, float]:
    return {k: float(v[i]) for k, v in values.items()}


# ---- hand-computed cases ----------------------------------------------------------------------
def test_target_at_rank_1():
    m = _row(ranking_metrics(torch.tensor([[7, 3, 9, 1, 2]]), torch.tensor([7]), ALL))
    for c in (1, 3, 5):
        assert m[f"recall@{c}"] == 1.0
        assert m[f"ndcg@{c}"] == pytest.approx(1.0)
        assert m[f"mrr@{c}"] == 1.0
        assert m[f"map@{c}"] == 1.0
        assert m[f"precision@{c}"] == pytest.approx(1.0 / c)


def test_target_at_rank_k():
    m = _row(ranking_metrics(torch.tensor([[7, 3, 9, 1, 2]]), torch.tensor([2]), ALL))
    for c in (1, 3):
        for name in ALL:
            assert m[f"{name}@{c}"] == 0.0
    assert m["recall@5"] == 1.0
    assert m["precision@5"] == pytest.approx(0.2)
    assert m["ndcg@5"] == pytest.approx(1.0 / math.log2(6))
    assert m["mrr@5"] == pytest.approx(0.2)
    assert m["map@5"] == pytest.approx(0.2)


def test_target_at_rank_3():
    m = _row(ranking_metrics(torch.tensor([[7, 3, 9, 1, 2]]), torch.tensor([9]), {"ndcg": [3], "mrr": [3]}))
    assert m == pytest.approx({"ndcg@3": 0.5, "mrr@3": 1 / 3})  # 1/log2(4) = 0.5


def test_target_absent():
    m = _row(ranking_metrics(torch.tensor([[7, 3, 9, 1, 2]]), torch.tensor([4]), ALL))
    assert all(v == 0.0 for v in m.values())


def test_padding_ids_never_match():
    # a catalog of 3 items asked for k=5: the last two ids are -1 ("no item")
    top = torch.tensor([[2, 0, 1, -1, -1], [2, 0, 1, -1, -1]])
    m = ranking_metrics(top, torch.tensor([1, -1]), {"recall": [5], "precision": [5], "ndcg": [5]})
    assert m["recall@5"].tolist() == [1.0, 0.0]
    assert m["precision@5"].tolist() == pytest.approx([0.2, 0.0])
    assert m["ndcg@5"][0].item() == pytest.approx(0.5)


def test_duplicate_ids_count_once_at_first_position():
    # ties in the ranking are resolved by the order of the ids; a repeated target counts once
    m = _row(ranking_metrics(torch.tensor([[4, 5, 5, 6]]), torch.tensor([5]), {"recall": [4], "precision": [4],
                                                                               "mrr": [4], "ndcg": [4]}))
    assert m == pytest.approx({"recall@4": 1.0, "precision@4": 0.25, "mrr@4": 0.5, "ndcg@4": 1 / math.log2(3)})


def test_k_larger_than_cutoffs_is_fine_and_smaller_raises():
    top = torch.arange(20).reshape(2, 10)
    out = ranking_metrics(top, torch.tensor([3, 12]), {"recall": [2, 5]})  # ranks 4 and 3
    assert out["recall@5"].tolist() == [1.0, 1.0]
    assert out["recall@2"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="largest cut-off"):
        ranking_metrics(top, torch.tensor([3, 19]), {"ndcg": [20]})


@pytest.mark.parametrize("bad", [{"hitrate": [10]}, {"ndcg": [0]}, {"ndcg": []}, {"ndcg": [2.5]}])
def test_bad_cutoffs_raise(bad):
    with pytest.raises(ValueError):
        ranking_metrics(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, dtype=torch.long), bad)
    with pytest.raises(ValueError):
        MetricAccumulator(ranking=bad)


def test_shapes_and_dtypes():
    out = ranking_metrics(torch.randint(0, 50, (8, 20)), torch.randint(0, 50, (8,)), {"ndcg": [10, 20]})
    assert set(out) == {"ndcg@10", "ndcg@20"}
    assert out["ndcg@10"].shape == (8,) and out["ndcg@10"].dtype == torch.float32
    with pytest.raises(ValueError):
        ranking_metrics(torch.randint(0, 50, (8, 20)), torch.randint(0, 50, (7,)), {"ndcg": [10]})


# ---- streaming --------------------------------------------------------------------------------
def test_mean_over_batches_equals_mean_over_concatenation():
    g = torch.Generator().manual_seed(0)
    top = torch.stack([torch.randperm(30, generator=g)[:10] for _ in range(103)])
    target = torch.randint(0, 30, (103,), generator=g)
    acc = MetricAccumulator(ranking=ALL)
    for lo in range(0, 103, 16):  # uneven last batch
        acc.update_ranking(top[lo:lo + 16], target[lo:lo + 16])
    whole = {k: float(v.mean()) for k, v in ranking_metrics(top, target, ALL).items()}
    assert acc.compute() == pytest.approx(whole, abs=1e-6)


def test_mask_and_prefix_and_reset():
    acc = MetricAccumulator(ranking={"recall": [1]}, prefix="next")
    acc.update_ranking(torch.tensor([[1], [2], [3]]), torch.tensor([1, 0, 3]), mask=torch.tensor([True, False, True]))
    assert acc.compute() == {"next/recall@1": 1.0}
    acc.reset()
    assert math.isnan(acc.compute()["next/recall@1"])


# ---- classification ---------------------------------------------------------------------------
def _auc_brute(probs, labels) -> float:
    pos = [p for p, y in zip(probs, labels) if y == 1]
    neg = [p for p, y in zip(probs, labels) if y == 0]
    total = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return total / (len(pos) * len(neg))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.7, 0.9, 1.0]), st.integers(0, 1)),
                min_size=2, max_size=60))
def test_auc_matches_pairwise_with_ties(rows):
    probs = [p for p, _ in rows]
    labels = [y for _, y in rows]
    if len(set(labels)) < 2:
        assert math.isnan(binary_auc(torch.tensor(probs), torch.tensor(labels)))
        return
    assert binary_auc(torch.tensor(probs), torch.tensor(labels)) == pytest.approx(_auc_brute(probs, labels))


def test_classification_streaming_hand_computed():
    probs = torch.tensor([0.9, 0.8, 0.5, 0.3, 0.6, 0.2])
    labels = torch.tensor([1, 0, 1, 0, 1, 1])
    acc = MetricAccumulator(classification=["auc", "accuracy", "precision", "recall"], prefix="buy")
    acc.update_classification(probs[:4], labels[:4])
    acc.update_classification(probs[4:], labels[4:])
    # predicted positive: prob > 0.5 -> 0.9, 0.8, 0.6; TP = 2 (0.9, 0.6), FP = 1, FN = 2 (0.5, 0.2), TN = 1
    out = acc.compute()
    assert out["buy/accuracy"] == pytest.approx(3 / 6)
    assert out["buy/precision"] == pytest.approx(2 / 3)
    assert out["buy/recall"] == pytest.approx(2 / 4)
    assert out["buy/auc"] == pytest.approx(_auc_brute(probs.tolist(), labels.tolist()))


def test_classification_degenerate():
    acc = MetricAccumulator(classification=["auc", "precision", "recall"])
    acc.update_classification(torch.tensor([0.1, 0.2]), torch.tensor([0, 0]))
    out = acc.compute()
    assert math.isnan(out["auc"]) and out["precision"] == 0.0 and out["recall"] == 0.0
    with pytest.raises(ValueError):
        MetricAccumulator(classification=["f1"])


# ---- regression -------------------------------------------------------------------------------
def test_regression_over_everything_seen():
    preds = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    targets = torch.tensor([1.5, 2.0, 2.0, 4.0, 8.0])
    acc = MetricAccumulator(regression=["rmse", "mae"])
    acc.update_regression(preds[:2], targets[:2])
    acc.update_regression(preds[2:], targets[2:])
    err = preds - targets
    out = acc.compute()
    assert out["rmse"] == pytest.approx(float(err.pow(2).mean().sqrt()))
    assert out["mae"] == pytest.approx(float(err.abs().mean()))
    with pytest.raises(ValueError):
        MetricAccumulator(regression=["r2"])


# ---- Transformers4Rec 23.12's formulas, re-derived on dense scores + one-hot labels -----------
def _t4rec_reference(scores: torch.Tensor, target: torch.Tensor, ks: list[int]) -> dict[str, torch.Tensor]:
    """T4Rec's RankingMetric._metric implementations (precision, recall, avg precision, ndcg, mrr),
    written out again on a dense one-hot label matrix: the thing specc avoids at catalog scale."""
    labels = torch.nn.functional.one_hot(target, scores.shape[1]).float()
    max_k = max(ks)
    _, idx = torch.topk(scores, max_k)
    top_labels = torch.gather(labels, 1, idx)                     # [B, max_k]
    n_rel = labels.sum(1)
    out = {}
    discounts = 1.0 / torch.log2(torch.arange(max_k, dtype=torch.float32) + 2)
    # precision@j for j = 1..max_k on the top-k labels (used by avg precision)
    prec_j = torch.cumsum(top_labels, 1) / torch.arange(1, max_k + 1, dtype=torch.float32)
    for k in ks:
        tl = top_labels[:, :k]
        out[f"precision@{k}"] = tl.sum(1) / k
        out[f"recall@{k}"] = torch.where(n_rel > 0, tl.sum(1) / n_rel.clamp(min=1), torch.zeros_like(n_rel))
        out[f"map@{k}"] = (prec_j[:, :k] * tl).sum(1) / n_rel.clamp(min=1, max=k)
        dcg = (tl * discounts[:k]).sum(1)
        ideal_labels = torch.sort(top_labels, dim=1, descending=True).values[:, :k]
        idcg = (ideal_labels * discounts[:k]).sum(1)
        out[f"ndcg@{k}"] = torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.zeros_like(dcg))
        out[f"mrr@{k}"] = (tl / torch.arange(1, k + 1, dtype=torch.float32)).max(1).values
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equivalent_to_t4rec_formulas_on_random_data(seed):
    g = torch.Generator().manual_seed(seed)
    batch, catalog, ks = 257, 41, [1, 2, 5, 10, 20]
    scores = torch.rand(batch, catalog, generator=g)              # continuous: no ties
    # make hits common: in half the rows the target is one of the top-scored items
    target = torch.randint(0, catalog, (batch,), generator=g)
    top_ids = torch.topk(scores, max(ks)).indices
    boost = torch.rand(batch, generator=g) < 0.5
    target = torch.where(boost, top_ids[torch.arange(batch), torch.randint(0, max(ks), (batch,), generator=g)], target)
    ours = ranking_metrics(top_ids, target, {name: ks for name in ("ndcg", "recall", "mrr", "precision", "map")})
    ref = _t4rec_reference(scores, target, ks)
    assert set(ours) == set(ref)
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-6, atol=1e-6, msg=key)
    # and the accumulator's mean is T4Rec's compute() (the mean of the concatenated per-row values)
    acc = MetricAccumulator(ranking={"ndcg": ks, "map": ks})
    for lo in range(0, batch, 64):
        acc.update_ranking(top_ids[lo:lo + 64], target[lo:lo + 64])
    got = acc.compute()
    for k in ks:
        assert got[f"ndcg@{k}"] == pytest.approx(float(ref[f"ndcg@{k}"].mean()), abs=1e-6)
        assert got[f"map@{k}"] == pytest.approx(float(ref[f"map@{k}"].mean()), abs=1e-6)


def test_empty_batch():
    out = ranking_metrics(torch.zeros(0, 10, dtype=torch.long), torch.zeros(0, dtype=torch.long), {"ndcg": [10]})
    assert out["ndcg@10"].shape == (0,)
    acc = MetricAccumulator(ranking={"ndcg": [10]})
    acc.update_ranking(torch.zeros(0, 10, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert math.isnan(acc.compute()["ndcg@10"])
