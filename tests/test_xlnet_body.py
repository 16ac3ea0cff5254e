"""specc's XLNet body computes Hugging Face's XLNetModel (content stream over inputs_embeds), weights and all."""
import json
from pathlib import Path

import pytest
import torch

import specc
from specc.nn.hf import HFTransformer, resolve_config
from specc.nn.xlnet import XLNetBody, count_parameters, runs_natively

B, L, D = 3, 7, 16


def _config(causal: bool, dropout: float = 0.0, **overrides):
    return resolve_config("xlnet", d_model=D, n_head=4, n_layer=2, d_ff=32, dropout=dropout, max_positions=L,
                          causal=causal, overrides=overrides)


def _pair(causal: bool, **overrides):
    config = _config(causal, **overrides)
    reference = HFTransformer(config, causal).double()
    ours = XLNetBody(config, causal).double()
    ours.load_state_dict(reference.state_dict())   # same parameter names and shapes
    return reference, ours


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, D, dtype=torch.float64, generator=g)
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[1, 4:] = False     # right padding
    valid[2, 1:] = False     # a one-item sequence
    return x, valid, torch.rand(B, L, L, generator=g) > 0.5


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("pattern", [False, True])
@pytest.mark.parametrize("overrides", [{}, {"clamp_len": 3, "ff_activation": "relu"}])
def test_outputs_and_gradients_equal_hugging_face(causal, pattern, overrides):
    reference, ours = _pair(causal, **overrides)
    x, valid, attention = _inputs(seed=int(causal) + 2 * int(pattern))
    attention = attention if pattern else None
    for mode in ("eval", "train"):   # dropout 0: train mode runs the same arithmetic
        reference.train(mode == "train")
        ours.train(mode == "train")
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        expected, got = reference(x1, valid, attention), ours(x2, valid, attention)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        weights = torch.randn_like(expected)
        (expected * weights).sum().backward()
        (got * weights).sum().backward()
        torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-12)
        grads = dict(reference.named_parameters())
        for name, p in ours.named_parameters():
            if grads[name].grad is None:
                assert p.grad is None or not p.grad.any(), name
            else:
                torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-10, atol=1e-12, msg=name)
        reference.zero_grad()
        ours.zero_grad()


def test_dropout_is_active_in_training_only():
    ours = XLNetBody(_config(True, dropout=0.3), True).double()
    x, valid, _ = _inputs(seed=5)
    ours.eval()
    assert torch.equal(ours(x, valid), ours(x, valid))
    ours.train()
    torch.manual_seed(0)
    a = ours(x, valid)
    assert not torch.equal(a, ours(x, valid))
    # the positional encoding is dropped out per sequence, as in XLNet: equal rows get different outputs
    same = ours(x[:1].expand(B, -1, -1), torch.ones(B, L, dtype=torch.bool))
    assert not torch.equal(same[0], same[1])


def test_parameter_count_matches_the_module():
    for overrides in ({}, {"d_inner": 48}):
        config = _config(True, **overrides)
        assert count_parameters(config) == sum(p.numel() for p in XLNetBody(config, True).parameters())
        assert count_parameters(config) == sum(p.numel() for p in HFTransformer(config, True).parameters())


def test_configs_it_does_not_reproduce_run_on_hugging_face():
    assert runs_natively("xlnet", _config(True))
    assert not runs_natively("hf:xlnet", _config(True))
    assert not runs_natively("xlnet", _config(True, ff_activation="mish"))


@pytest.mark.parametrize("overrides", [{"bi_data": True}, {"attn_type": "uni"}])
def test_attention_type_and_bi_data_are_specc_s(overrides):
    with pytest.raises(ValueError, match="masking decides"):
        _config(True, **overrides)


def test_hf_xlnet_runs_hugging_face_s_module():
    spec = json.loads((Path(__file__).resolve().parent.parent / "specs" / "xlnet_clm.json").read_text())
    spec["body"]["architecture"] = "hf:xlnet"
    spec["schema"] = str(Path(__file__).resolve().parent.parent / "specs" / spec["schema"])
    model = specc.build(spec)
    assert isinstance(model.body, HFTransformer)
    assert model.plan.parameters == sum(p.numel() for p in model.parameters())


def test_xlnet_specs_build_this_body():
    spec = Path(__file__).resolve().parent.parent / "specs" / "xlnet_clm.json"
    assert isinstance(specc.build(spec).body, XLNetBody)


def test_an_xlnet_spec_without_config_overrides_needs_no_transformers():
    """Its config is specc's table of XLNetConfig's defaults, equal to what transformers resolves."""
    import subprocess
    import sys

    from transformers import XLNetConfig

    from specc.nn.hf import resolve_config
    from specc.nn.xlnet import CONFIG_DEFAULTS
    defaults = XLNetConfig()
    assert {k: getattr(defaults, k) for k in CONFIG_DEFAULTS} == CONFIG_DEFAULTS
    sizes = dict(d_model=32, n_head=4, n_layer=2, d_ff=96, dropout=0.2, max_positions=20, causal=True)
    through_transformers = resolve_config("xlnet", **sizes, overrides={"clamp_len": -1})
    del through_transformers["clamp_len"]
    assert resolve_config("xlnet", **sizes, overrides={}) == through_transformers
    spec = ("{'specc': 1, 'inputs': {'max_sequence_length': 8}, 'masking': {'kind': 'causal'}, 'tasks': "
            "[{'kind': 'next_item'}], 'body': {'kind': 'transformer', 'architecture': 'xlnet', 'd_model': 16, "
            "'n_head': 2, 'n_layer': 1}}")
    code = ("import sys, specc; from specc.synth import default_schema; from tests.helpers import random_batch\n"
            f"m = specc.build({spec}, default_schema())\n"
            "m(random_batch(m))['loss'].backward()\n"
            "sys.exit('transformers' in sys.modules)")
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert run.returncode == 0, run.stderr[-2000:]
