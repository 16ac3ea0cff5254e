"""linear_cross_entropy: Triton (interpreter on CPU) vs the torch reference and a float64 truth."""
import importlib

import pytest
import torch
import torch.nn.functional as F

from specc.kernels import linear_cross_entropy, linear_cross_entropy_cpu, linear_cross_entropy_reference

lce_mod = importlib.import_module("specc.kernels.linear_cross_entropy")


def _data(N, C, d, n_ignored=3, dtype=torch.float32, device="cpu"):
    h = torch.randn(N, d, dtype=dtype, device=device)
    w = (torch.randn(C, d, dtype=dtype, device=device) * 0.4)
    t = torch.randint(0, C, (N,), device=device)
    t[torch.randperm(N, device=device)[:n_ignored]] = -100
    return h, w, t


def _run(fn, h, w, t, go, **kw):
    h = h.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    loss = fn(h, w, t, **kw)
    gh, gw = torch.autograd.grad(loss, [h, w], go)
    return loss, gh, gw


@pytest.mark.parametrize("N,C,reduction,smoothing,temperature", [
    (37, 1009, "mean", 0.0, 1.0),
    (70, 1009, "sum", 0.1, 0.7),   # 3 row blocks x 6 catalog splits: the atomic d(hidden) path
    (37, 50, "none", 0.2, 1.3),    # one catalog tile: the plain-store d(hidden) path
])
def test_lce_matches_reference(seed, poison, assert_oracle, N, C, reduction, smoothing, temperature):
    d = 48
    h, w, t = _data(N, C, d)
    go = torch.randn(N) if reduction == "none" else torch.tensor(1.7)
    kw = dict(reduction=reduction, label_smoothing=smoothing, temperature=temperature)
    k = _run(linear_cross_entropy, h, w, t, go, backend="triton", **kw)
    r = _run(linear_cross_entropy_reference, h, w, t, go, **kw)
    tr = _run(linear_cross_entropy_reference, h.double(), w.double(), t, go.double(), **kw)
    for what, a, b, c in zip(("loss", "d hidden", "d weight"), k, r, tr):
        assert_oracle(a, b, c, atol=1e-5, rtol=1e-4, what=what)


def test_lce_matches_torch_cross_entropy(seed):
    """The reference is torch's own cross-entropy (incl. label smoothing + ignore_index semantics)."""
    h, w, t = _data(23, 101, 16)
    want = F.cross_entropy(h @ w.T / 0.9, t, label_smoothing=0.15)
    got = linear_cross_entropy(h, w, t, label_smoothing=0.15, temperature=0.9, backend="triton")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(linear_cross_entropy_reference(h, w, t, label_smoothing=0.15, temperature=0.9,
                                                              chunk_elems=500), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_lce_all_ignored(seed, reduction):
    h, w, t = _data(19, 211, 32, n_ignored=19)
    for backend in ("triton", "torch"):
        loss, gh, gw = _run(linear_cross_entropy, h, w, t, torch.tensor(1.0), reduction=reduction, backend=backend)
        assert loss.item() == 0.0
        assert (gh == 0).all() and (gw == 0).all()


def test_lce_dispatch(seed, monkeypatch):
    h, w, t = _data(8, 30, 16)

    def boom(*a, **k):
        raise AssertionError("triton path taken")

    monkeypatch.setattr(lce_mod._LinearCrossEntropy, "apply", boom)
    linear_cross_entropy(h, w, t, backend="torch")
    with pytest.raises(AssertionError, match="triton path"):
        linear_cross_entropy(h, w, t)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    linear_cross_entropy(h, w, t)
    with pytest.raises(ValueError):
        linear_cross_entropy(h, w, t, reduction="avg")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lce_gpu(seed, dtype):
    h, w, t = _data(4097, 50_021, 128, n_ignored=100, dtype=dtype, device="cuda")
    go = torch.tensor(1.0, device="cuda")
    k = _run(linear_cross_entropy, h, w, t, go, label_smoothing=0.1)
    r = _run(linear_cross_entropy_reference, h, w, t, go, label_smoothing=0.1)
    tr = _run(linear_cross_entropy_reference, h.double(), w.double(), t, go.double(), label_smoothing=0.1)
    tol = 1e-3 if dtype == torch.float32 else 1e-2
    for a, b, c in zip(k, r, tr):
        err_k = (a.double() - c).abs().max().item()
        err_r = (b.double() - c).abs().max().item()
        assert err_k <= 2 * err_r + tol * c.abs().max().item(), (err_k, err_r)


def test_half_precision_off_cuda_matches_the_reference(seed):
    """Triton's CPU interpreter mishandles bf16 dots: such inputs must still give the reference's answer."""
    from specc.kernels import linear_cross_entropy, linear_cross_entropy_reference, topk_scores
    h, w = torch.randn(37, 16, dtype=torch.bfloat16), torch.randn(101, 16, dtype=torch.bfloat16)
    t = torch.randint(0, 101, (37,))
    torch.testing.assert_close(linear_cross_entropy(h, w, t), linear_cross_entropy_reference(h, w, t))
    scores, ids = topk_scores(h, w, 5)
    torch.testing.assert_close(scores, (h.float() @ w.float().T).gather(1, ids), atol=0.1, rtol=0.01)


# ------------------------------------------------------------------ the CPU training path
@pytest.mark.parametrize("N,C,reduction,smoothing,temperature,chunk_elems", [
    (37, 1009, "mean", 0.0, 1.0, 1 << 19),   # one chunk
    (257, 1009, "sum", 0.1, 0.7, 4000),     # 33-row chunks and a short last one
    (100, 7, "mean", 0.2, 1.3, 1),          # the 32-row minimum chunk
])
def test_cpu_path_matches_reference(seed, assert_oracle, N, C, reduction, smoothing, temperature, chunk_elems):
    h, w, t = _data(N, C, 48)
    go = torch.tensor(1.7)
    kw = dict(reduction=reduction, label_smoothing=smoothing, temperature=temperature)
    got = _run(linear_cross_entropy_cpu, h, w, t, go, chunk_elems=chunk_elems, **kw)
    ref = _run(linear_cross_entropy_reference, h, w, t, go, **kw)
    truth = _run(linear_cross_entropy_reference, h.double(), w.double(), t, go.double(), **kw)
    for what, a, b, c in zip(("loss", "d hidden", "d weight"), got, ref, truth):
        assert_oracle(a, b, c, atol=1e-5, rtol=1e-4, what=what)
    got64 = _run(linear_cross_entropy_cpu, h.double(), w.double(), t, go.double(), chunk_elems=chunk_elems, **kw)
    for a, c in zip(got64, truth):   # float64 in, float64 arithmetic throughout
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)


def test_cpu_path_edges(seed):
    h, w, t = _data(19, 211, 32, n_ignored=19)   # every row ignored: 0 and zero gradients
    loss, gh, gw = _run(linear_cross_entropy_cpu, h, w, t, torch.tensor(1.0))
    assert loss.item() == 0.0 and not gh.any() and not gw.any()
    h, w, t = _data(40, 97, 16)
    h.requires_grad_()
    with torch.no_grad():   # no gradients wanted: none formed, same loss
        torch.testing.assert_close(linear_cross_entropy_cpu(h, w, t), linear_cross_entropy_reference(h, w, t))
    loss = linear_cross_entropy_cpu(h, w, t)   # backward twice through one graph accumulates
    loss.backward(retain_graph=True)
    once = h.grad.clone()
    loss.backward()
    torch.testing.assert_close(h.grad, 2 * once)
    (g,) = torch.autograd.grad(linear_cross_entropy_cpu(h, w, t), h, create_graph=True)
    with pytest.raises(RuntimeError):   # no second derivatives: an error, never a silent zero
        torch.autograd.grad(g.square().sum(), h)
    h = h.detach()
    go = torch.randn(40)   # per-row losses: their gradients come from the reference
    for a, b in zip(_run(linear_cross_entropy_cpu, h, w, t, go, reduction="none"),
                    _run(linear_cross_entropy_reference, h, w, t, go, reduction="none")):
        torch.testing.assert_close(a, b)
    hb, wb = h.bfloat16(), w.bfloat16()   # bf16 in (autocast): fp32 softmax, bf16 grads close to fp32's
    got = _run(linear_cross_entropy_cpu, hb, wb, t, torch.tensor(1.0))
    want = _run(linear_cross_entropy_reference, hb.float(), wb.float(), t, torch.tensor(1.0))
    assert [g.dtype for g in got] == [torch.bfloat16] * 3
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=2e-3)
