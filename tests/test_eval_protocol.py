"""Scoring given candidates (Model.score) and the sampled evaluation protocol (`metrics.protocol: sampled`)."""
import json

import pytest
import torch

import specc
from specc.errors import SpecError
from specc.metrics import ranking_metrics
from specc.sampled_eval import ranks_as_top_ids, sampled_negatives
from tests.helpers import ROOT


def _spec(metrics: dict | None = None) -> dict:
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec["schema"] = str(ROOT / "specs" / spec["schema"])
    if metrics is not None:
        spec["tasks"][0]["metrics"] = metrics
    return spec


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return specc.build(_spec()).eval()


def test_score_equals_the_scores_recommend_ranks_by(model):
    batch = model.random_batch(5, seed=3)
    scores, ids = model.recommend(batch, k=7)
    assert torch.allclose(model.score(batch, ids), scores, atol=1e-5)
    same_for_all = model.score(batch, torch.tensor([3, 9, 27]))
    assert same_for_all.shape == (5, 3)
    assert torch.allclose(same_for_all, model.score(batch, torch.tensor([[3, 9, 27]] * 5)))


@pytest.mark.parametrize("ids, message", [
    (torch.tensor([0, 4]), "catalog items"),
    (torch.tensor([5, 1000]), "catalog items"),
    (torch.tensor([1.0, 2.0]), "integer ids"),
    (torch.tensor([[1, 2]] * 3), "rows"),
])
def test_score_refuses_ids_outside_the_catalog_and_bad_shapes(model, ids, message):
    with pytest.raises(ValueError, match=message):
        model.score(model.random_batch(5, seed=3), ids)


def test_negatives_are_unseen_catalog_items_and_depend_only_on_the_row():
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, 60, (32, 12), generator=g)
    items[::3, 8:] = 0
    target = torch.randint(1, 60, (32,), generator=g)
    negatives = sampled_negatives(items, target, n_items=60, negatives=30, seed=7)
    assert negatives.shape == (32, 30) and int(negatives.min()) >= 1 and int(negatives.max()) < 60
    for row in range(32):
        assert not set(negatives[row].tolist()) & (set(items[row].tolist()) | {int(target[row])})
    # the same row in another batch, at another position, draws the same negatives; another seed others
    again = sampled_negatives(items[[5, 0]], target[[5, 0]], n_items=60, negatives=30, seed=7)
    assert torch.equal(again, negatives[[5, 0]])
    assert not torch.equal(sampled_negatives(items, target, 60, 30, seed=8), negatives)


def test_negatives_are_uniform_over_the_unseen_items_however_few_are_left():
    from specc.errors import DataError
    catalog = torch.arange(1, 60)
    items = catalog[torch.randperm(59, generator=torch.Generator().manual_seed(1))][None, :54]   # 5 left unseen
    items = torch.cat([items, items[:, :1]], 1)                                                 # and a repeat
    negatives = sampled_negatives(items, torch.tensor([items[0, 3]]), n_items=60, negatives=5000, seed=0)
    unseen = sorted(set(range(1, 60)) - set(items[0].tolist()))
    counts = torch.bincount(negatives[0], minlength=60)
    assert sorted(torch.nonzero(counts).flatten().tolist()) == unseen
    assert ((counts[unseen] - 1000).abs() < 150).all(), counts[unseen]
    with pytest.raises(DataError, match="holds every item of the catalog"):
        sampled_negatives(catalog[None, :58], torch.tensor([59]), n_items=60, negatives=3, seed=0)


def test_ranks_as_top_ids_puts_the_target_at_its_rank_ties_against_it():
    scores = torch.tensor([[0.5, 0.9, 0.1, 0.7], [0.9, 0.1, 0.2, 0.3], [0.4, 0.4, 0.0, 0.0]])
    target = torch.tensor([11, 12, 13])
    top = ranks_as_top_ids(scores, target, k=3)
    assert top.tolist() == [[-1, -1, 11], [12, -1, -1], [-1, 13, -1]]
    assert ranks_as_top_ids(scores, target, k=2)[0].tolist() == [-1, -1]


def test_sampled_protocol_metrics_equal_a_brute_force_ranking(tmp_path):
    spec = _spec({"ndcg": [5, 10], "recall": [10], "protocol": "sampled", "negatives": 40, "seed": 3})
    torch.manual_seed(0)
    model = specc.build(spec).eval()
    batch = model.random_batch(16, min_length=2, seed=4, targets=True)
    top, target = model.evaluate_batch(batch, k=10)["next_item"]
    # brute force: strip each row's last item, rank it among the unseen negatives with Model.score
    items = batch["item_id-list"]
    lengths = (items != 0).sum(1)
    stripped = {c: v.clone() for c, v in batch.items()}
    for c, v in stripped.items():
        if v.dim() == 2:
            v[torch.arange(16), lengths - 1] = 0
    negatives = sampled_negatives(stripped["item_id-list"], target, 1000, 40, seed=3)
    scores = model.score(stripped, torch.cat([target[:, None], negatives], 1))
    rank = (scores[:, 1:] >= scores[:, :1]).sum(1) + 1
    expected_recall = (rank <= 10).double().mean()
    expected_ndcg5 = torch.where(rank <= 5, 1 / torch.log2(rank.double() + 1), 0).mean()
    got = ranking_metrics(top, target, {"recall": [10], "ndcg": [5]})
    assert float(got["recall@10"].double().mean()) == pytest.approx(float(expected_recall))
    assert float(got["ndcg@5"].double().mean()) == pytest.approx(float(expected_ndcg5))


def test_full_protocol_stays_the_default_and_is_not_in_the_plan():
    plan = specc.compile(_spec())
    assert plan.next_item.sampled is None
    sampled = specc.compile(_spec({"recall": [10], "protocol": "sampled"}))
    assert sampled.next_item.sampled == {"negatives": 100, "seed": 0}
    assert sampled.next_item.metrics == {"recall": (10,)}
    assert "sampled: 100 negatives" in sampled.summary()


@pytest.mark.parametrize("metrics, path, code", [
    ({"recall": [10], "protocol": "sometimes"}, "$.tasks[0].metrics.protocol", "invalid_type"),
    ({"recall": [10], "protocol": "sampled", "negatives": 0}, "$.tasks[0].metrics.negatives", "invalid_type"),
    ({"recall": 10}, "$.tasks[0].metrics.recall", "invalid_type"),
    ({"recal": [10]}, "$.tasks[0].metrics.recal", "unknown_metric"),
    ({"recall": [10], "protocol": "sampled", "negatives": 990}, "$.tasks[0].metrics.negatives",
     "too_many_negatives"),
    ({"recall": [50], "protocol": "sampled", "negatives": 20}, "$.tasks[0].metrics.recall", "shape_mismatch"),
    ({"recall": [10], "negatives": 5}, "$.tasks[0].metrics.negatives", "sampled_only"),
    ({"recall": [10], "protocol": "full", "seed": 3}, "$.tasks[0].metrics.seed", "sampled_only"),
])
def test_bad_protocol_keys_are_located_errors(metrics, path, code):
    with pytest.raises(SpecError) as err:
        specc.compile(_spec(metrics))
    issues = [i for i in err.value.issues if i.path == path]
    assert issues, [str(i) for i in err.value.issues]
    if code:
        assert issues[0].code == code


def test_exclude_seen_under_the_sampled_protocol_counts_a_repeated_target_as_a_miss():
    spec = _spec({"recall": [6], "protocol": "sampled", "negatives": 5, "seed": 1})
    torch.manual_seed(0)
    model = specc.build(spec).eval()
    batch = model.random_batch(8, min_length=3, seed=2, targets=True)
    items = batch["item_id-list"]
    last = (items != 0).sum(1) - 1
    items[0, last[0]] = items[0, 0]   # row 0's target is an item it saw before
    plain, _ = model.evaluate_batch(batch, k=6)["next_item"]
    excluded, _ = model.evaluate_batch(batch, k=6, exclude_seen=True)["next_item"]
    assert (plain[0] > 0).any() and (excluded[0] == -1).all()   # 5 negatives: every target ranks in the top 6
    repeats = [r for r in range(8) if items[r, :last[r]].eq(items[r, last[r]]).any()]
    others = [r for r in range(8) if r not in repeats]
    assert torch.equal(excluded[others], plain[others])


def test_a_row_holding_the_whole_catalog_is_refused_before_training(tmp_path, capsys):
    from datetime import datetime, timedelta

    from specc.cli import main
    from tests.helpers import train_on_prepared
    start = datetime(2024, 1, 1)
    rows = [(f"s{s}", f"i{(s + j) % 8}", start + timedelta(minutes=20 * s + j)) for s in range(60) for j in range(3)]
    rows += [("all", f"i{j}", start + timedelta(days=9, minutes=j)) for j in range(8)]   # the latest: in valid
    train_on_prepared(tmp_path, rows, ["session_id", "item_id", "ts"], max_length=4, evaluate=False)
    spec = json.loads((tmp_path / "spec.json").read_text())
    spec["tasks"][0]["metrics"] = {"recall": [3], "protocol": "sampled", "negatives": 2}
    (tmp_path / "sampled.json").write_text(json.dumps(spec))
    capsys.readouterr()
    assert main(["train", str(tmp_path / "sampled.json"), "--data", str(tmp_path / "data" / "train"),
                 "--eval", str(tmp_path / "data" / "valid"), "--out", str(tmp_path / "run2"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "hold every item of the catalog (8)" in err and "Traceback" not in err
    assert not (tmp_path / "run2" / "checkpoints").exists()
