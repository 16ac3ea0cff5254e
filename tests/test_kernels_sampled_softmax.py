"""sampled_softmax_loss: Triton (interpreter on CPU) vs the torch reference and a float64 truth."""
import importlib

import pytest
import torch

from specc.kernels import sampled_softmax_loss, sampled_softmax_loss_reference

ssm_mod = importlib.import_module("specc.kernels.sampled_softmax_loss")


def _data(N, C, S, d, dtype=torch.float32, device="cpu"):
    h = torch.randn(N, d, dtype=dtype, device=device)
    w = torch.randn(C, d, dtype=dtype, device=device) * 0.4
    t = torch.randint(0, C, (N,), device=device)
    neg = torch.randint(0, C, (S,), device=device)
    if N >= 4 and S >= 12:
        neg[:4] = t[:4]          # accidental hits
        neg[4:8] = neg[8:12]     # duplicate negatives
    lq_t = torch.rand(N, device=device) * 3
    lq_n = torch.rand(S, device=device) * 3
    return h, w, t, neg, lq_t, lq_n


def _run(fn, h, w, t, neg, go, **kw):
    h = h.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    loss = fn(h, w, t, neg, **kw)
    gh, gw = torch.autograd.grad(loss, [h, w], go)
    return loss, gh, gw


@pytest.mark.parametrize("logq,hits,temperature,reduction", [
    (True, True, 0.5, "mean"),
    (False, False, 1.0, "sum"),
    (True, False, 1.3, "none"),
])
def test_sampled_softmax_matches_reference(seed, poison, assert_oracle, logq, hits, temperature, reduction):
    N, C, S, d = 53, 1009, 97, 48
    h, w, t, neg, lq_t, lq_n = _data(N, C, S, d)
    go = torch.randn(N) if reduction == "none" else torch.tensor(0.8)
    kw = dict(remove_accidental_hits=hits, temperature=temperature, reduction=reduction,
              logq_target=lq_t if logq else None, logq_negatives=lq_n if logq else None)
    k = _run(sampled_softmax_loss, h, w, t, neg, go, backend="triton", **kw)
    r = _run(sampled_softmax_loss_reference, h, w, t, neg, go, **kw)
    kw64 = dict(kw, logq_target=lq_t.double() if logq else None, logq_negatives=lq_n.double() if logq else None)
    tr = _run(sampled_softmax_loss_reference, h.double(), w.double(), t, neg, go.double(), **kw64)
    for what, a, b, c in zip(("loss", "d hidden", "d weight"), k, r, tr):
        assert_oracle(a, b, c, atol=1e-5, rtol=1e-4, what=what)
    used = torch.zeros(C, dtype=torch.bool)
    used[neg] = True
    used[t] = True
    assert (k[2][~used] == 0).all()  # only rows that were used get gradient


def test_sampled_softmax_hit_removal(seed):
    """A row whose every negative is its own target reduces to loss 0 (only the positive is left)."""
    h, w, _, _, _, _ = _data(5, 40, 8, 16)
    t = torch.full((5,), 7)
    neg = torch.full((8,), 7)
    loss = sampled_softmax_loss(h, w, t, neg, reduction="none", backend="triton")
    torch.testing.assert_close(loss, torch.zeros(5), rtol=0, atol=1e-6)
    loss_keep = sampled_softmax_loss(h, w, t, neg, reduction="none", remove_accidental_hits=False, backend="triton")
    torch.testing.assert_close(loss_keep, torch.full((5,), 9.0).log(), rtol=1e-5, atol=1e-5)


def test_sampled_softmax_dispatch(seed, monkeypatch):
    h, w, t, neg, _, _ = _data(6, 30, 10, 16)

    def boom(*a, **k):
        raise AssertionError("triton path taken")

    monkeypatch.setattr(ssm_mod._SampledSoftmax, "apply", boom)
    sampled_softmax_loss(h, w, t, neg, backend="torch")
    with pytest.raises(AssertionError, match="triton path"):
        sampled_softmax_loss(h, w, t, neg)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    sampled_softmax_loss(h, w, t, neg)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sampled_softmax_gpu(seed, dtype):
    h, w, t, neg, lq_t, lq_n = _data(4096, 100_000, 8192, 128, dtype=dtype, device="cuda")
    go = torch.tensor(1.0, device="cuda")
    kw = dict(logq_target=lq_t, logq_negatives=lq_n)
    k = _run(sampled_softmax_loss, h, w, t, neg, go, **kw)
    r = _run(sampled_softmax_loss_reference, h, w, t, neg, go, **kw)
    tr = _run(sampled_softmax_loss_reference, h.double(), w.double(), t, neg, go.double(),
              logq_target=lq_t.double(), logq_negatives=lq_n.double())
    tol = 1e-3 if dtype == torch.float32 else 1e-2
    for a, b, c in zip(k, r, tr):
        err_k = (a.double() - c).abs().max().item()
        err_r = (b.double() - c).abs().max().item()
        assert err_k <= 2 * err_r + tol * c.abs().max().item(), (err_k, err_r)
