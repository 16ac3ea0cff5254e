"""Building blocks: specc's CPU dropout keeps nn.Dropout's semantics, and every built model uses it."""
import torch
from torch import nn

from specc.nn.dropout import Dropout, use_fast_dropout


def test_dropout_drops_at_rate_p_and_keeps_the_expectation(seed):
    d = Dropout(0.3).train()
    x = torch.ones(400_001)   # odd: the last draw masks one element
    y = d(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.3) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    rate = round(0.3 * 2 ** 15) / 2 ** 15   # the rate it runs at: p to within 2^-16
    assert abs(rate - 0.3) < 2 ** -16
    assert torch.allclose(y[~dropped], torch.full_like(y[~dropped], 1 / (1 - rate)), rtol=1e-6)
    # the two elements masked by one draw are independent: P(both dropped) = rate^2
    pairs = dropped[:400_000].view(-1, 2)
    assert abs(pairs.all(1).float().mean().item() - rate ** 2) < 0.005
    assert d(torch.ones(3, 5, dtype=torch.bfloat16)).dtype == torch.bfloat16
    # rates 15 bits cannot express run on torch's dropout, expectation and all
    assert 0.5 < Dropout(0.99999).train()(torch.ones(4_000_000)).mean().item() < 1.5
    assert Dropout(1.0).train()(x).sum().item() == 0.0
    t = torch.ones(1000)
    assert Dropout(0.5, inplace=True).train()(t) is t and (t == 0).any()   # in place, as nn.Dropout


def test_dropout_is_identity_in_eval_and_passes_gradients_through_kept_units(seed):
    d = Dropout(0.5)
    x = torch.randn(1000, requires_grad=True)
    assert torch.equal(d.eval()(x), x)
    d.train()(x).sum().backward()
    kept = x.grad != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 2.0))
    assert 400 < kept.sum() < 600


def test_dropout_is_reproducible_from_the_torch_seed():
    d = Dropout(0.2).train()
    torch.manual_seed(7)
    a = d(torch.ones(100))
    torch.manual_seed(7)
    assert torch.equal(a, d(torch.ones(100)))


def test_every_dropout_of_a_module_tree_is_swapped():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.1), nn.Sequential(nn.Dropout(0.2)))
    use_fast_dropout(model)
    kinds = [type(m) for m in model.modules() if isinstance(m, nn.Dropout)]
    assert kinds == [Dropout, Dropout] and model[2][0].p == 0.2


def test_keep_freed_memory_takes_effect_on_glibc():
    import platform

    from specc.cpu import keep_freed_memory
    assert keep_freed_memory() == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_attention_with_cpu_dropout_is_torchs_attention_with_its_probabilities_dropped():
    import torch.nn.functional as F

    from specc.nn.bodies import _attention_with_dropout
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    keys = torch.rand(3, 1, 7, 7) > 0.4
    keys[0, 0, 3] = False   # a query that may see no key: zeros, as torch gives
    additive = torch.zeros(3, 1, 7, 7, dtype=torch.float64).masked_fill(~keys, float("-inf"))
    for mask, causal in ((None, True), (keys, False), (additive, False), (None, False)):
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        # a rate below 15 bits' resolution runs on torch's dropout at that rate: the attention itself to ~1e-9
        got = _attention_with_dropout(q, k, v, mask, causal, 1e-12)
        assert torch.allclose(got, want, atol=1e-9), (mask is None, causal)
        assert torch.equal(got[0, :, 3], torch.zeros_like(got[0, :, 3])) or mask is None
    # at a real rate every probability is dropped or scaled, so a sum over many draws keeps the expectation
    ones = torch.ones(1, 1, 64, 1, dtype=torch.float64)
    x = torch.zeros(1, 1, 64, 8, dtype=torch.float64)
    out = torch.stack([_attention_with_dropout(x, x, ones, None, False, 0.25) for _ in range(200)])
    assert abs(out.mean().item() - 1.0) < 0.02 and (out != 1.0).any()
    q.grad = None
    _attention_with_dropout(q, k, v, None, True, 0.5).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_fp32_dropout_multiplies_by_one_scaled_mask_forward_and_backward(seed):
    d = Dropout(0.25).train()
    x = torch.randn(50_000, requires_grad=True)
    y = d(x)
    y.backward(torch.ones_like(y))
    kept = y != 0
    scale = 2 ** 15 / (2 ** 15 - round(0.25 * 2 ** 15))
    assert torch.allclose(y[kept], x[kept] * scale) and torch.equal(x.grad != 0, kept)
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], scale))
