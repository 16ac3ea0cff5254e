"""Inference reads one position per row: the transformer bodies compute only those rows in their last layer,
and that must equal the full computation read at the same positions."""
import pytest
import torch

import specc
from helpers import random_batch, random_relative_biases

SCHEMA = specc.Schema.from_columns([
    {"name": "items", "tags": ["item_id", "categorical", "list"], "is_list": True, "cardinality": 40},
    {"name": "prices", "tags": ["continuous", "list"], "is_list": True, "dtype": "float"},
    {"name": "ts", "tags": ["list"], "is_list": True, "dtype": "int"},
])


def _float64(batch):
    return {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


CASES = [("native", "causal"), ("native", "mlm"), ("xlnet", "causal"), ("xlnet", "mlm"), ("gpt2", "causal"),
         ("ligr", "causal"), ("ligr", "mlm"), ("hstu", "causal"), ("hstu", "mlm"), ("hstu-time", "causal"),
         ("hstu-time", "plm"), ("gru", "causal"), ("mlp", "causal")]
OTHER_BODIES = {"gru": {"kind": "gru", "d_model": 16}, "mlp": {"kind": "mlp", "dims": [16]},
                "hstu": {"kind": "hstu", "d_model": 16, "n_head": 2, "n_layer": 3},
                "hstu-time": {"kind": "hstu", "d_model": 16, "n_head": 2, "n_layer": 3, "time": "ts"}}


def _body(arch):
    return OTHER_BODIES.get(arch) or {"kind": "transformer", "architecture": arch, "d_model": 16, "n_head": 2,
                                      "n_layer": 3}


@pytest.mark.parametrize("arch,masking", CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_reading_positions_equals_the_full_computation(arch, masking, seed):
    spec = {"specc": 1, "inputs": {"max_sequence_length": 9, "embeddings": {"default_dim": 8}},
            "masking": {"kind": masking}, "body": _body(arch), "tasks": [{"kind": "next_item"}]}
    model = random_relative_biases(specc.build(spec, SCHEMA)).double().eval()
    batch = random_batch(model, B=7, min_len=1, seed=seed)
    batch["ts"] = torch.randint(0, 10 ** 5, batch["items"].shape).cumsum(1) * (batch["items"] != 0)
    batch, lengths = model.prepare(_float64(batch))
    query = (torch.rand(7) * lengths).long()           # any real position of each row, not only the last
    with torch.no_grad():
        full = model.encode(batch, lengths)
        picked = model.encode(batch, lengths, query=query)
    assert picked.shape == (7, full.shape[-1])
    torch.testing.assert_close(picked, full[torch.arange(7), query], rtol=1e-10, atol=1e-10)


def test_recommend_reads_the_position_after_the_last_item():
    spec = {"specc": 1, "inputs": {"max_sequence_length": 9, "embeddings": {"default_dim": 8}},
            "body": _body("native"), "tasks": [{"kind": "next_item"}]}
    model = specc.build(spec, SCHEMA).double().eval()
    batch, lengths = model.prepare(_float64(random_batch(model, B=5, min_len=1)))
    with torch.no_grad():
        expected = model.encode(batch, lengths)[torch.arange(5), lengths - 1]
        torch.testing.assert_close(model.next_hidden(batch, lengths), expected, rtol=1e-10, atol=1e-10)
