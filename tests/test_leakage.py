"""No future leakage: causal predictions never see later items, and eval scores never see the eval target."""
import pytest
import torch

import specc
from helpers import random_batch, random_relative_biases

SCHEMA = specc.Schema.from_columns([
    {"name": "items", "tags": ["item_id", "categorical", "list"], "is_list": True, "cardinality": 50},
    {"name": "cats", "tags": ["categorical", "list"], "is_list": True, "cardinality": 7},
    {"name": "prices", "tags": ["continuous", "list"], "is_list": True, "dtype": "float"},
    {"name": "age", "tags": ["continuous"], "dtype": "float"},
    {"name": "ts", "tags": ["list"], "is_list": True, "dtype": "int"},   # timestamps: only hstu's time bias reads them
])

TRANSFORMERS = ["native", "ligr", "gpt2", "xlnet", "bert", "roberta", "albert", "electra", "llama", "hf:qwen2", "hf:mistral",
                "hf:xlnet", "hf:xlm", "hf:bert-generation",   # these two have causal switches of their own
                "hf:gptj",   # its rotary_dim (64 by default) is fitted to the 8-wide heads
                "hf:gpt_neo"]   # its attention_types (one kind per layer) are fitted to n_layer
HSTU = {"hstu": {"kind": "hstu", "d_model": 16, "n_head": 2, "n_layer": 2},
        "hstu-time": {"kind": "hstu", "d_model": 16, "n_head": 2, "n_layer": 2, "time": "ts"}}


def body_for(name):
    return HSTU.get(name) or {"kind": "transformer", "architecture": name, "d_model": 16, "n_head": 2, "n_layer": 2}


CAUSAL_BODIES = [body_for(a) for a in TRANSFORMERS + list(HSTU)] + [{"kind": "gru", "d_model": 16},
                                                                   {"kind": "mlp", "dims": [16]}]
BODY_IDS = TRANSFORMERS + list(HSTU) + ["gru", "mlp"]


def model_for(body, masking="causal"):
    spec = {"specc": 1, "inputs": {"max_sequence_length": 8, "embeddings": {"default_dim": 8},
                                   "continuous": {"kind": "linear", "dim": 4}},
            "masking": {"kind": masking}, "body": body, "tasks": [{"kind": "next_item"}]}
    return random_relative_biases(specc.build(spec, SCHEMA)).eval()


def timed_batch(model, **kwargs):
    """A random batch whose timestamps grow along each sequence by gaps of 0 to 10^5 (many time buckets)."""
    batch = random_batch(model, **kwargs)
    real = batch["items"] != 0
    batch["ts"] = torch.randint(0, 10 ** 5, real.shape).cumsum(1) * real
    return batch


def changed_after(prepared, t):
    """The prepared batch with every list column's values after position t replaced."""
    changed = {k: v.clone() for k, v in prepared.items()}
    for column, high in (("items", 50), ("cats", 7)):
        changed[column][:, t + 1:] = torch.randint(1, high, changed[column][:, t + 1:].shape)
    changed["prices"][:, t + 1:] = torch.rand(changed["prices"][:, t + 1:].shape)
    if "ts" in changed:   # later events may even claim earlier times
        changed["ts"][:, t + 1:] = torch.randint(0, 10 ** 6, changed["ts"][:, t + 1:].shape)
    return changed


@pytest.mark.parametrize("body", CAUSAL_BODIES, ids=BODY_IDS)
def test_causal_output_at_t_ignores_items_after_t(body, seed):
    model = model_for(body)
    prepared, lengths = model.prepare(timed_batch(model, B=4, min_len=8))
    t = 4
    changed = changed_after(prepared, t)
    with torch.no_grad():
        before = model.encode(prepared, lengths)
        after = model.encode(changed, lengths)
    assert not torch.allclose(before[:, t + 1:], after[:, t + 1:]) or body["kind"] == "mlp"
    torch.testing.assert_close(before[:, :t + 1], after[:, :t + 1], atol=1e-5, rtol=1e-5)


def test_a_config_that_sees_the_future_cannot_compile_for_causal_masking():
    body = {"kind": "transformer", "architecture": "hf:xlm", "d_model": 16, "n_head": 2, "n_layer": 1,
            "config": {"causal": False}}
    with pytest.raises(specc.SpecError) as err:
        model_for(body)
    assert [i.code for i in err.value.issues] == ["unsupported_architecture"]
    assert "see later ones" in err.value.issues[0].message


BIDIRECTIONAL = [("native", "mlm"), ("native", "plm"), ("xlnet", "plm"), ("bert", "mlm"), ("albert", "mlm"),
                 ("electra", "rtd"), ("xlnet", "mlm"), ("hf:distilbert", "mlm"), ("ligr", "mlm"), ("ligr", "plm"),
                 ("hstu", "mlm"), ("hstu-time", "plm")] + [(a, "causal") for a in TRANSFORMERS + list(HSTU)]


@pytest.mark.parametrize("arch,masking", BIDIRECTIONAL, ids=[f"{a}-{m}" for a, m in BIDIRECTIONAL])
def test_eval_scores_ignore_the_eval_target(arch, masking, seed):
    model = model_for(body_for(arch), masking)
    batch = timed_batch(model, B=5)
    lengths = (batch["items"] != 0).sum(1)
    rows = torch.arange(5)
    other = {k: v.clone() for k, v in batch.items()}
    other["items"][rows, lengths - 1] = (batch["items"][rows, lengths - 1] % 49) + 1
    other["cats"][rows, lengths - 1] = (batch["cats"][rows, lengths - 1] % 6) + 1
    other["prices"][rows, lengths - 1] += 0.5
    other["ts"][rows, lengths - 1] += 10 ** 6
    with torch.no_grad():
        ids_a, target_a = model.evaluate_batch(batch, k=49)["next_item"]
        ids_b, target_b = model.evaluate_batch(other, k=49)["next_item"]
        h_a = model.next_hidden(*model._strip_last(*model.prepare(batch))[:2])
        h_b = model.next_hidden(*model._strip_last(*model.prepare(other))[:2])
    assert not torch.equal(target_a, target_b)
    torch.testing.assert_close(h_a, h_b)
    assert torch.equal(ids_a, ids_b)


@pytest.mark.parametrize("masking", ["mlm", "plm"])
def test_recommend_for_a_full_sequence_uses_the_most_recent_items(masking, seed):
    """With no room left for the mask token the oldest item is dropped, not the newest."""
    model = model_for({"kind": "transformer", "architecture": "native", "d_model": 16, "n_head": 2, "n_layer": 1},
                      masking)
    batch = random_batch(model, B=3, min_len=8)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["items"][:, 0] = (batch["items"][:, 0] % 49) + 1
    a = model.recommend(batch, k=5)
    b = model.recommend(changed, k=5)
    torch.testing.assert_close(a[0], b[0])


def test_a_config_that_builds_far_more_than_its_sizes_cannot_compile(monkeypatch):
    import specc.nn.hf as hf
    monkeypatch.setattr(hf, "count_parameters", lambda config: 4_632_861_440)   # e.g. blt's default sub-models
    body = {"kind": "transformer", "architecture": "gpt2", "d_model": 16, "n_head": 2, "n_layer": 1}
    with pytest.raises(specc.SpecError) as err:
        model_for(body)
    assert [i.code for i in err.value.issues] == ["unsupported_architecture"]
    assert "4,632,861,440 parameters" in err.value.issues[0].message


def test_hugging_face_bodies_take_the_spec_s_feed_forward_width():
    for arch, masking, name in (("hf:distilbert", "mlm", "hidden_dim"), ("hf:opt", "causal", "ffn_dim")):
        body = {"kind": "transformer", "architecture": arch, "d_model": 16, "n_head": 2, "n_layer": 1, "d_ff": 24}
        model = model_for(body, masking)
        assert model.plan.body.config[name] == 24
        assert model.plan.parameters == sum(p.numel() for p in model.parameters())
