"""hstu and ligr bodies: their equations, the time column, training and export (leaks: test_leakage.py,
query positions: test_query_positions.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

import specc
from helpers import random_relative_biases
from specc.export import InferenceModel, trace
from specc.nn.hstu import HstuLayer, position_buckets, time_buckets
from specc.nn.ligr import LiGRBlock

SCHEMA = specc.Schema.from_columns([
    {"name": "items", "tags": ["item_id", "categorical", "list"], "is_list": True, "cardinality": 30},
    {"name": "ts", "tags": ["list"], "is_list": True, "dtype": "int"},
    {"name": "prices", "tags": ["continuous", "list"], "is_list": True, "dtype": "float"},
    {"name": "cats", "tags": ["categorical", "list"], "is_list": True, "cardinality": 5},
    {"name": "day", "tags": [], "dtype": "int"},
])
BODIES = {"hstu": {"kind": "hstu", "d_model": 16, "n_head": 2, "n_layer": 2, "dropout": 0.0},
          "hstu-time": {"kind": "hstu", "d_model": 16, "n_head": 2, "n_layer": 2, "dropout": 0.0, "time": "ts"},
          "ligr": {"kind": "transformer", "architecture": "ligr", "d_model": 16, "n_head": 2, "n_layer": 2,
                   "dropout": 0.0}}


def spec_for(body, loss=None):
    task = {"kind": "next_item", **({"loss": loss} if loss else {})}
    return {"specc": 1, "inputs": {"max_sequence_length": 8, "features": ["items"]}, "body": body, "tasks": [task]}


def timed(batch):
    batch["ts"] = torch.randint(0, 10 ** 5, batch["items"].shape).cumsum(1) * (batch["items"] != 0)
    return batch


# ---------------------------------------------------------------- the equations


def test_hstu_layer_computes_the_paper_s_equations(seed):
    """Y = X + f2(Norm(SiLU(QK^T + rab) V / N) * U), with U, V, Q, K = Split(SiLU(f1(Norm(X)))), one head at a time."""
    D, H, L, N = 8, 2, 5, 6
    layer = random_relative_biases(HstuLayer(D, H, 0.0, N, time=True)).double()
    x = torch.randn(1, L, D, dtype=torch.float64)
    times = torch.tensor([[0, 3, 3, 40, 1000]])
    allowed = torch.tril(torch.ones(L, L, dtype=torch.bool))[None]
    positions, gaps = position_buckets(L, N, x.device), time_buckets(times)
    out = layer(x, allowed, positions, gaps)

    u, v, q, k = F.silu(layer.f1(layer.norm_in(x[0]))).split(D, dim=-1)
    d = D // H
    heads = []
    for h in range(H):
        cols = slice(h * d, (h + 1) * d)
        rab = layer.position_bias[positions, h] + layer.time_bias[gaps[0], h]
        a = F.silu(q[:, cols] @ k[:, cols].T + rab) * allowed[0] / N
        heads.append(a @ v[:, cols])
    expected = x[0] + layer.f2(layer.norm_attention(torch.cat(heads, -1)) * u)
    torch.testing.assert_close(out[0], expected)


def test_relative_buckets():
    b = position_buckets(40, 40, "cpu")
    assert b[5, 5] == 0 and b[5, 2] == 3 and b[2, 5] == 32 + 3      # looking back, looking ahead
    assert b[39, 0] == 31 and b[0, 39] == 63                           # the farthest share the last bucket
    assert b[39, 30] == 9 and b[39, 23] == 16 > b[39, 24]              # exact up to 15, then logarithmic
    g = time_buckets(torch.tensor([[0, 1, 3, 1000, 2 ** 62]]))
    assert g[0, 0].tolist() == [0, 1, 2, math.floor(math.log2(1001)), 62]


def test_ligr_block_gates_both_residual_branches(seed):
    D, H, L = 8, 2, 4
    block = LiGRBlock(D, H, 24, 0.0).double()
    x = torch.randn(2, L, D, dtype=torch.float64)
    out = block(x, None, True)
    n = block.norm1(x)
    q, k, v = block.qkv(n).view(2, L, 3, H, D // H).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, L, D)
    h = x + torch.sigmoid(block.gate1(n)) * block.out(a)
    m = block.norm2(h)
    swiglu = block.ff.down(F.silu(block.ff.gate(m)) * block.ff.up(m))
    torch.testing.assert_close(out, h + torch.sigmoid(block.gate2(m)) * swiglu)


# ---------------------------------------------------------------- the time column


def test_the_time_bias_reads_the_time_column(seed):
    model = random_relative_biases(specc.build(spec_for(BODIES["hstu-time"]), SCHEMA)).eval()
    assert model.input_columns == ["items", "ts"] and model.plan.body.time_column == "ts"
    batch, lengths = model.prepare(timed(model.random_batch(4, min_length=8)))
    later = dict(batch, ts=batch["ts"] + 10 ** 6 * (torch.arange(8) >= 4))   # a long pause before the 5th item
    with torch.no_grad():
        before, after = model.encode(batch, lengths), model.encode(later, lengths)
    torch.testing.assert_close(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])
    assert "time bias (time from 'ts')" in model.plan.summary()


def test_without_a_time_column_hstu_reads_no_timestamps():
    model = specc.build(spec_for(BODIES["hstu"]), SCHEMA)
    assert model.input_columns == ["items"] and model.body.time is False
    assert specc.build(spec_for(BODIES["hstu-time"]), SCHEMA).plan.parameters == \
        model.plan.parameters + 2 * 64 * 2   # a [64 buckets, 2 heads] time bias per layer


@pytest.mark.parametrize("column,code", [("tss", "unknown_column"), ("day", "not_sequential"),
                                         ("prices", "not_timestamps"), ("cats", "not_timestamps")])
def test_a_bad_time_column_is_a_spec_error(column, code):
    with pytest.raises(specc.SpecError) as err:
        specc.compile(spec_for({**BODIES["hstu"], "time": column}), SCHEMA)
    assert [(i.path, i.code) for i in err.value.issues] == [("$.body.time", code)]
    if code == "unknown_column":   # the closest name, and how prepared data get timestamps
        assert "'ts'" in err.value.issues[0].hint and "--derive timestamp" in err.value.issues[0].hint


def test_hstu_trains_on_the_timestamps_of_data_prepare(tmp_path):
    import json
    from datetime import datetime, timedelta

    import polars as pl

    from specc.cli import main
    start = datetime(2024, 3, 4)
    pl.DataFrame([(f"s{s}", f"i{(s + j) % 6}", start + timedelta(hours=s, seconds=7 ** j)) for s in range(12)
                  for j in range(5)], schema=["session_id", "item_id", "ts"], orient="row").write_csv(tmp_path / "log.csv")
    assert main(["data", "prepare", str(tmp_path / "log.csv"), "--out", str(tmp_path / "data"), "--item", "item_id",
                 "--time", "ts", "--session", "session_id", "--derive", "timestamp", "--quiet"]) == 0
    spec = {"specc": 1, "schema": str(tmp_path / "data" / "schema.pbtxt"),
            "inputs": {"max_sequence_length": 8, "embeddings": {"default_dim": 8}},   # features by default
            "body": {"kind": "hstu", "d_model": 8, "n_head": 1, "n_layer": 1, "time": "ts-list"},
            "tasks": [{"kind": "next_item"}], "training": {"batch_size": 8, "epochs": 1, "seed": 1}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    plan = specc.compile(str(tmp_path / "spec.json"))
    assert [f.column for f in plan.inputs.features] == ["item_id-list"] and plan.body.time_column == "ts-list"
    assert main(["train", str(tmp_path / "spec.json"), "--data", str(tmp_path / "data" / "train"),
                 "--eval", str(tmp_path / "data" / "valid"), "--out", str(tmp_path / "run"), "--quiet"]) == 0


def test_hstu_heads_must_divide_d_model_and_ligr_takes_no_config():
    with pytest.raises(specc.SpecError) as err:
        specc.compile(spec_for({**BODIES["hstu"], "n_head": 3}), SCHEMA)
    assert [(i.path, i.code) for i in err.value.issues] == [("$.body.n_head", "shape_mismatch")]
    with pytest.raises(specc.SpecError) as err:
        specc.compile(spec_for({**BODIES["ligr"], "config": {"x": 1}}), SCHEMA)
    assert [(i.path, i.code) for i in err.value.issues] == [("$.body.config", "unknown_key")]


# ---------------------------------------------------------------- training and export


def _cyclic_batch(B=32, L=8, n_items=29, seed=0):
    """Each session walks the catalog in steps of one: the next item is always predictable."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, n_items, (B, 1), generator=g)
    items = (start + torch.arange(L)) % n_items + 1
    return {"items": items, "ts": torch.arange(L).repeat(B, 1) * 60}


@pytest.mark.parametrize("name", list(BODIES))
def test_a_few_steps_reduce_the_loss(name, seed):
    model = specc.build(spec_for(BODIES[name], {"kind": "sampled_softmax", "negatives": 8}), SCHEMA)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = _cyclic_batch()
    losses = []
    for _ in range(30):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", list(BODIES))
def test_torchscript_export_equals_recommend(name, seed):
    model = random_relative_biases(specc.build(spec_for(BODIES[name]), SCHEMA)).eval()
    traced = trace(InferenceModel(model, k=5))
    for B, L in ((3, 8), (1, 3), (6, 11)):
        batch = timed(model.random_batch(B, length=L, seed=B))
        scores, ids = model.recommend(batch, k=5)
        out = traced({c: batch[c] for c in model.input_columns})
        assert torch.equal(out[0], ids)
        torch.testing.assert_close(out[1], scores, rtol=1e-5, atol=1e-5)
