"""Continuous inputs are standardised by default, so values in any unit mix with the embeddings."""
import pytest
import torch

from specc.nn.inputs import InputBlock


def _block(normalize: bool) -> InputBlock:
    return InputBlock(tables=[(11, 8)], sequential=[("items", 0)], context=[], continuous=["price", "count"],
                      continuous_kind="linear", continuous_dim=4, soft_cardinality=None, aggregation="concat",
                      item_column="items", aggregated_width=12, layer_norm=True, dropout=0.0, projection=None,
                      normalize_continuous=normalize)


def _batch(price, count):
    return {"items": torch.randint(1, 11, price.shape), "price": price, "count": count}


def test_standardised_inputs_do_not_depend_on_the_unit(seed):
    block = _block(normalize=True).train()
    price, count = torch.rand(6, 5), torch.rand(6, 5)
    batch = _batch(price, count)
    in_dollars = block(batch, 6, 5)
    in_cents = block({**batch, "price": price * 100 + 3, "count": count * 1e4}, 6, 5)
    torch.testing.assert_close(in_dollars, in_cents, atol=1e-4, rtol=1e-4)


def test_without_normalize_the_unit_changes_the_output(seed):
    block = _block(normalize=False).train()
    price, count = torch.rand(6, 5), torch.rand(6, 5)
    batch = _batch(price, count)
    assert not torch.allclose(block(batch, 6, 5), block({**batch, "price": price * 100}, 6, 5), atol=1e-3)


def test_inference_uses_the_training_batches_statistics(seed):
    block = _block(normalize=True).train()
    price = torch.rand(40, 5) * 500
    block(_batch(price, torch.rand(40, 5)), 40, 5)
    mean = block.standardize.running_mean[0].item()
    assert mean == pytest.approx(price.mean().item(), rel=1e-4)
    block.eval()
    one = _batch(price[:1], torch.rand(1, 5))
    torch.testing.assert_close(block(one, 1, 5), block(one, 1, 5))   # no update at inference
    assert block.standardize.running_mean[0].item() == pytest.approx(mean)


def test_a_training_batch_of_one_value_uses_the_running_statistics(seed):
    block = _block(normalize=True).train()
    out = block(_batch(torch.rand(1, 1), torch.rand(1, 1)), 1, 1)
    assert out.shape == (1, 1, 12) and torch.isfinite(out).all()


def test_the_plan_says_the_continuous_columns_are_standardised():
    import specc
    from specc.schema import Column, Schema
    f = frozenset
    schema = Schema((Column("items", f({"item_id", "categorical", "list"}), "int", True, 50),
                     Column("price", f({"continuous", "list"}), "float", True)), source=None)
    spec = {"specc": 1, "inputs": {"max_sequence_length": 8},
            "body": {"kind": "transformer", "architecture": "native", "d_model": 16, "n_head": 2, "n_layer": 1},
            "tasks": [{"kind": "next_item"}]}
    assert specc.compile(spec, schema).inputs.continuous.normalize is True
    assert "standardised" in specc.compile(spec, schema).summary()
    spec["inputs"]["continuous"] = {"kind": "linear", "normalize": False}
    assert specc.compile(spec, schema).inputs.continuous.normalize is False
