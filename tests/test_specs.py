"""Every example spec compiles, builds with the planned parameter count, trains a step and recommends."""
import json

import pytest
import torch

import specc
from helpers import SPECS, random_batch


def test_there_are_enough_example_specs():
    assert len(SPECS) >= 10


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_example_spec_compiles_builds_and_trains(path, seed):
    plan = specc.compile(str(path))
    assert plan.summary().startswith("model ")
    assert json.loads(plan.to_json())["parameters"] == plan.parameters
    model = specc.build(str(path))
    assert sum(p.numel() for p in model.parameters()) == plan.parameters
    model.train()
    batch = random_batch(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = model(batch)
    assert torch.isfinite(out["loss"]) and set(out["losses"]) >= {t.name for t in plan.tasks}
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    opt.step()
    model.eval()
    with torch.no_grad():
        evaluated = model(batch)
    assert torch.isfinite(evaluated["loss"])
    if plan.next_item is not None:
        scores, ids = model.recommend(batch, k=7)
        assert scores.shape == ids.shape == (6, 7)
        assert (ids > 0).all() and (ids < plan.next_item.n_items).all()
        assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_spec_files_reference_the_published_json_schema():
    for path in SPECS:
        assert json.loads(path.read_text())["$schema"] == "../specc/spec.schema.json", path


def test_merlin_style_batches_give_the_same_outputs(seed):
    """Ragged list columns (`col__values`/`col__offsets`) and [B, 1] scalars are the padded batch in Merlin's form."""
    model = specc.build(str(SPECS[0].parent / "multitask.json")).eval()
    batch = random_batch(model, B=5)
    lengths = (batch["item_id-list"] != 0).sum(1)
    valid = torch.arange(batch["item_id-list"].shape[1])[None] < lengths[:, None]
    merlin = {}
    for c, v in batch.items():
        if c in model.list_columns:
            merlin[f"{c}__values"] = v[valid]
            merlin[f"{c}__offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        else:
            merlin[c] = v[:, None]
    with torch.no_grad():
        torch.testing.assert_close(model.recommend(batch, k=5), model.recommend(merlin, k=5))
        torch.testing.assert_close(model(batch)["loss"], model(merlin)["loss"])


def test_recommend_is_deterministic_even_in_training_mode(seed):
    model = specc.build(str(SPECS[0].parent / "bert4rec.json")).train()
    batch = random_batch(model, B=4)
    a, b = model.recommend(batch, k=5), model.recommend(batch, k=5)
    torch.testing.assert_close(a, b)
    assert model.training


@pytest.mark.parametrize("problem", ["left_padded", "float_ids", "out_of_range", "missing"])
def test_bad_batches_are_rejected_not_misread(problem):
    model = specc.build(str(SPECS[0].parent / "sasrec.json")).eval()
    items = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    batch = {"item_id-list": items}
    if problem == "left_padded":
        batch["item_id-list"] = torch.tensor([[0, 5, 6, 7], [8, 9, 0, 0]])
    elif problem == "float_ids":
        batch["item_id-list"] = items.float()
    elif problem == "out_of_range":
        batch["item_id-list"] = items * 1000
    else:
        batch = {"other": items}
    with pytest.raises(specc.DataError):
        model.recommend(batch, k=3)


def test_bf16_autocast_trains_and_feeds_the_kernels_one_dtype(seed, monkeypatch):
    import specc.kernels as K
    seen = []

    def spy(original):
        def call(hidden, weight, *args, **kwargs):
            seen.append((hidden.dtype, weight.dtype))
            return original(hidden, weight, *args, **kwargs)
        return call
    for name in ("linear_cross_entropy", "linear_cross_entropy_cpu"):   # the Triton and the CPU path
        monkeypatch.setattr(K, name, spy(getattr(K, name)))
    model = specc.build(str(SPECS[0].parent / "sasrec.json")).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(random_batch(model))["loss"]
    loss.backward()
    assert seen == [(torch.bfloat16, torch.bfloat16)]
    assert model.inputs.tables[0].grad.dtype == torch.float32 and torch.isfinite(loss)
