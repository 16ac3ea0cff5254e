"""What a model accepts as a batch, and that its recommendations are always real catalog items."""
import pytest
import torch

import specc
from specc.errors import DataError
from helpers import random_batch

SCHEMA = specc.Schema.from_columns([
    {"name": "items", "tags": ["item_id", "categorical", "list"], "is_list": True, "cardinality": 12},
    {"name": "prices", "tags": ["continuous", "list"], "is_list": True, "dtype": "float"},
    {"name": "session", "tags": ["categorical"], "cardinality": 500},
])


def _model(loss=None, shared=False, max_len=5):
    embeddings = {"default_dim": 8, **({"shared": {"ids": ["items", "session"]}} if shared else {})}
    task = {"kind": "next_item", **({"loss": loss} if loss else {})}
    spec = {"specc": 1, "inputs": {"max_sequence_length": max_len, "embeddings": embeddings},
            "body": {"kind": "transformer", "architecture": "native", "d_model": 16, "n_head": 2, "n_layer": 1},
            "tasks": [task]}
    return specc.build(spec, SCHEMA)


def test_a_tied_table_shared_with_a_larger_column_scores_only_the_catalog(seed):
    model = _model(shared=True)
    assert model._item_weight().shape[0] == 12     # the shared table has 500 rows
    _, ids = model.recommend(random_batch(model, B=8), k=11)
    assert ids.min() >= 1 and ids.max() < 12
    model.train()
    loss = model(random_batch(model, B=8, min_len=2))["loss"]
    assert loss.item() < 2 * torch.log(torch.tensor(12.0))   # a softmax over 12 items, not 500


def test_exclude_seen_never_returns_the_padding_id_for_a_full_row(seed):
    model = _model()
    with torch.no_grad():   # make id 0 the best-scoring row, as training can leave it
        model.inputs.tables[0][0] = 50 * model.inputs.tables[0][1:].mean(0)
    batch = {"items": torch.tensor([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]]), "prices": torch.rand(2, 5),
             "session": torch.tensor([3, 4])}
    _, ids = model.recommend(batch, k=6, exclude_seen=True)
    assert (ids != 0).all()
    assert not (set(ids[0].tolist()) & {1, 2, 3, 4, 5})


@pytest.mark.parametrize("loss", [{"kind": "bce"}, {"kind": "gbce", "negatives": 4}])
def test_binary_losses_are_zero_for_a_batch_without_targets(loss):
    model = _model(loss=loss).train()
    batch = {"items": torch.tensor([[3, 0, 0], [5, 0, 0]]), "prices": torch.rand(2, 3), "session": torch.tensor([1, 2])}
    assert model(batch)["loss"].item() == 0.0


def test_a_scalar_column_may_come_ragged_with_one_value_per_row(seed):
    model = _model().eval()
    batch = random_batch(model, B=3)
    ragged = dict(batch, session__values=batch["session"], session__offsets=torch.arange(4))
    del ragged["session"]
    torch.testing.assert_close(model.recommend(ragged, k=4)[0], model.recommend(batch, k=4)[0])


@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(session__values=torch.tensor([1, 2, 3, 4]), session__offsets=torch.tensor([0, 2, 3, 4]))
     or b.pop("session"), "one value per row"),
    (lambda b: b.update(session=torch.ones(3, 5, dtype=torch.long)), "scalar column"),
    (lambda b: b.update(session=torch.ones(2, dtype=torch.long)), "has 2 rows"),
    (lambda b: b.update(prices=torch.rand(3, 4)), "list column 'prices' has shape"),
    (lambda b: b.update(prices=torch.rand(3)), "list column 'prices' has shape"),
    (lambda b: b["prices"].__setitem__((1, 0), float("nan")), "NaN or infinite"),
    # one session given as a flat list is not three sessions of one item each
    (lambda b: b.update(items=torch.tensor([5, 6, 7]), prices=torch.rand(3)), "list columns are \\[batch, length\\]"),
    (lambda b: b.update(items=b["items"].numpy()), "'items' is a numpy.ndarray; the model takes torch tensors"),
    (lambda b: b.update(items=[["sku-1", "sku-2"]] * 3), "'items' is a builtins.list.*Mapping.load"),
    (lambda b: b["items"].__setitem__(1, 0), "row\\(s\\) 1 hold no items"),
])
def test_misaligned_or_bad_columns_are_data_errors(change, message, seed):
    model = _model()
    batch = random_batch(model, B=3)
    change(batch)
    with pytest.raises(DataError, match=message):
        model.recommend(batch, k=4)


def test_ragged_list_columns_must_share_the_item_column_s_offsets():
    model = _model()
    batch = {"items__values": torch.tensor([1, 2, 3, 4]), "items__offsets": torch.tensor([0, 1, 4]),
             "prices__values": torch.rand(4), "prices__offsets": torch.tensor([0, 2, 4]), "session": torch.tensor([1, 2])}
    with pytest.raises(DataError, match="other offsets"):
        model.recommend(batch, k=4)


def test_the_full_catalog_loss_gives_the_padding_id_no_mass(seed):
    model = _model().train()
    hidden = torch.randn(6, 16)
    weight = model._item_weight()
    target = torch.randint(1, 12, (6,))
    loss = model.next_item.full_catalog_loss(hidden, weight, target, "torch")
    logits = model.next_item.queries(hidden) @ weight.T
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[:, 1:], target - 1))
    loss.backward()
    assert model.inputs.tables[0].grad[0].abs().max() == 0   # row 0 gets no gradient


def test_scoring_also_refuses_rows_without_items_and_non_tensors(seed):
    model = _model()
    batch = random_batch(model, B=3)
    batch["items"][2] = 0
    with pytest.raises(DataError, match="row\\(s\\) 2 hold no items"):
        model.score(batch, torch.tensor([1, 2]))
    with pytest.raises(DataError, match="row\\(s\\) 0, 1, 2 hold no items"):
        model.recommend({c: v[:, :0] if v.dim() == 2 else v for c, v in random_batch(model, B=3).items()}, k=2)

