"""No future leakage: causal predictions never see later items, and eval scores never see the eval target."""
import pytest
import torch

import specc
from helpers import random_batch

SCHEMA = specc.Schema.from_columns([
    {"name": "items", "tags": ["item_id", "categorical", "list"], "is_list": True, "cardinality": 50},
    {"name": "cats", "tags": ["categorical", "list"], "is_list": True, "cardinality": 7},
    {"name": "prices", "tags": ["continuous", "list"], "is_list": True, "dtype": "float"},
    {"name": "age", "tags": ["continuous"], "dtype": "float"},
])

TRANSFORMERS = ["native", "gpt2", "xlnet", "bert", "roberta", "albert", "electra", "llama", "hf:qwen2", "hf:mistral",
                "hf:xlnet", "hf:xlm", "hf:bert-generation",   # these two have causal switches of their own
                "hf:gptj",   # its rotary_dim (64 by default) is fitted to the 8-wide heads
                "hf:gpt_neo"]   # its attention_types (one kind per layer) are fitted to n_layer
CAUSAL_BODIES = [{"kind": "transformer", "architecture": a, "d_model": 16, "n_head": 2, "n_layer": 2}
                 for a in TRANSFORMERS] + [{"kind": "gru", "d_model": 16}, {"kind": "mlp", "dims": [16]}]
BODY_IDS = TRANSFORMERS + ["gru", "mlp"]


def model_for(body, masking="causal"):
    spec = {"specc": 1, "inputs": {"max_sequence_length": 8, "embeddings": {"default_dim": 8},
                                   "continuous": {"kind": "linear", "dim": 4}},
            "masking": {"kind": masking}, "body": body, "tasks": [{"kind": "next_item"}]}
    model = specc.build(spec, SCHEMA)
    return model.eval()


@pytest.mark.parametrize("body", CAUSAL_BODIES, ids=BODY_IDS)
def test_causal_output_at_t_ignores_items_after_t(body, seed):
    model = model_for(body)
    batch = random_batch(model, B=4, min_len=8)
    prepared, lengths = model.prepare(batch)
    changed = {k: v.clone() for k, v in prepared.items()}
    t = 4
    changed["items"][:, t + 1:] = torch.randint(1, 50, changed["items"][:, t + 1:].shape)
    changed["cats"][:, t + 1:] = torch.randint(1, 7, changed["cats"][:, t + 1:].shape)
    changed["prices"][:, t + 1:] = torch.rand(changed["prices"][:, t + 1:].shape)
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
                 ("electra", "rtd"), ("xlnet", "mlm"), ("hf:distilbert", "mlm")] + [(a, "causal") for a in TRANSFORMERS]


@pytest.mark.parametrize("arch,masking", BIDIRECTIONAL, ids=[f"{a}-{m}" for a, m in BIDIRECTIONAL])
def test_eval_scores_ignore_the_eval_target(arch, masking, seed):
    model = model_for({"kind": "transformer", "architecture": arch, "d_model": 16, "n_head": 2, "n_layer": 2},
                      masking)
    batch = random_batch(model, B=5)
    lengths = (batch["items"] != 0).sum(1)
    rows = torch.arange(5)
    other = {k: v.clone() for k, v in batch.items()}
    other["items"][rows, lengths - 1] = (batch["items"][rows, lengths - 1] % 49) + 1
    other["cats"][rows, lengths - 1] = (batch["cats"][rows, lengths - 1] % 6) + 1
    other["prices"][rows, lengths - 1] += 0.5
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
