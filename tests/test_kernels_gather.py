"""gather_concat / gather_sum: Triton (interpreter on CPU) vs the torch reference and a float64 truth."""
import importlib

import pytest
import torch

from specc.kernels import gather_concat, gather_concat_reference, gather_sum, gather_sum_reference

# the package attributes gather_concat / gather_sum are the functions; fetch the modules themselves
gc_mod = importlib.import_module("specc.kernels.gather_concat")
gs_mod = importlib.import_module("specc.kernels.gather_sum")


def _tables(rows, dims, dtype=torch.float32):
    return [torch.randn(r, d, dtype=dtype, requires_grad=True) for r, d in zip(rows, dims)]


def _ids(rows, shape, dtype=torch.int64):
    out = []
    for r in rows:
        i = torch.randint(0, r, shape, dtype=dtype)
        i.view(-1)[:4] = i.view(-1)[0]  # guaranteed duplicates
        out.append(i)
    return out


def _grads(fn, weights, ids, go, **kw):
    out = fn(weights, ids, **kw)
    return out, torch.autograd.grad(out, weights, go)


def _f64(ws):
    return [w.detach().double().requires_grad_() for w in ws]


@pytest.mark.parametrize("padding_idx", [None, 0])
@pytest.mark.parametrize("id_dtype", [torch.int64, torch.int32])
def test_gather_concat_matches_reference(seed, poison, assert_oracle, padding_idx, id_dtype):
    rows, dims = [11, 7, 300], [48, 17, 8]
    ws = _tables(rows, dims)
    ids = _ids(rows, (5, 7), id_dtype)
    ids[0][0, :3] = 0  # padding rows (when padding_idx=0)
    go = torch.randn(5, 7, sum(dims))
    out, gk = _grads(gather_concat, ws, ids, go, padding_idx=padding_idx, backend="triton")
    ref, gr = _grads(gather_concat_reference, ws, ids, go, padding_idx=padding_idx)
    tr, gt = _grads(gather_concat_reference, _f64(ws), ids, go.double(), padding_idx=padding_idx)
    assert out.shape == (5, 7, sum(dims)) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # a gather is exact
    for i, (a, b, t) in enumerate(zip(gk, gr, gt)):
        assert_oracle(a, b, t, what=f"grad table {i}")
    if padding_idx is not None:
        assert (out[0, :3, :48] == 0).all()
        for g in gk:
            assert (g[padding_idx] == 0).all()


@pytest.mark.parametrize("n_tables", [2, 5])  # 5 > 4 slots: a second launch accumulates
def test_gather_sum_matches_reference(seed, poison, assert_oracle, n_tables):
    rows = [13, 9, 40, 5, 21][:n_tables]
    ws = _tables(rows, [24] * n_tables)
    ids = _ids(rows, (3, 11))
    go = torch.randn(3, 11, 24)
    out, gk = _grads(gather_sum, ws, ids, go, padding_idx=2, backend="triton")
    ref, gr = _grads(gather_sum_reference, ws, ids, go, padding_idx=2)
    tr, gt = _grads(gather_sum_reference, _f64(ws), ids, go.double(), padding_idx=2)
    assert out.shape == (3, 11, 24)
    assert_oracle(out, ref, tr, what="gather_sum forward")
    for i, (a, b, t) in enumerate(zip(gk, gr, gt)):
        assert_oracle(a, b, t, what=f"grad table {i}")
        assert (a[2] == 0).all()


def test_gather_duplicate_ids_accumulate(seed, poison):
    w = torch.randn(6, 40, requires_grad=True)
    ids = torch.full((2, 50), 4, dtype=torch.int64)
    ids[1, :7] = 1
    go = torch.randn(2, 50, 40)
    (g,) = torch.autograd.grad(gather_concat([w], [ids], backend="triton"), [w], go)
    gof = go.reshape(-1, 40)
    torch.testing.assert_close(g[4], gof[ids.reshape(-1) == 4].sum(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g[1], gof[ids.reshape(-1) == 1].sum(0), rtol=1e-5, atol=1e-5)
    assert (g[[0, 2, 3, 5]] == 0).all()


def test_gather_shared_ids_and_table(seed):
    """One id tensor feeding two tables, and one table used twice: grads add up."""
    w1, w2 = torch.randn(9, 16, requires_grad=True), torch.randn(9, 32, requires_grad=True)
    ids = torch.randint(0, 9, (4, 6))
    go = torch.randn(4, 6, 64)
    gk = torch.autograd.grad(gather_concat([w1, w2, w1], [ids, ids, ids], backend="triton"), [w1, w2], go)
    gr = torch.autograd.grad(gather_concat_reference([w1, w2, w1], [ids, ids, ids]), [w1, w2], go)
    for a, b in zip(gk, gr):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gather_empty_ids(seed):
    w = torch.randn(5, 8, requires_grad=True)
    ids = torch.zeros((0, 3), dtype=torch.int64)
    out = gather_concat([w], [ids], backend="triton")
    assert out.shape == (0, 3, 8)
    (g,) = torch.autograd.grad(out.sum(), [w], allow_unused=True)
    assert g is None or (g == 0).all()


def test_gather_backend_dispatch(seed, monkeypatch):
    ws = _tables([5, 6], [8, 8])
    ids = _ids([5, 6], (2, 3))

    def boom(*a, **k):
        raise AssertionError("triton path taken")

    monkeypatch.setattr(gc_mod._GatherConcat, "apply", boom)
    monkeypatch.setattr(gs_mod._GatherSum, "apply", boom)
    gather_concat(ws, ids, backend="torch")
    gather_sum(ws, ids, backend="torch")
    with pytest.raises(AssertionError, match="triton path"):
        gather_concat(ws, ids)  # auto + TRITON_INTERPRET=1 -> triton
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    gather_concat(ws, ids)  # auto + CPU tensors, no interpreter -> reference
    gather_sum(ws, ids)
    with pytest.raises(RuntimeError):
        gather_concat(ws, ids, backend="triton")  # CPU tensors cannot run compiled Triton
    with pytest.raises(ValueError):
        gather_concat(ws, ids, backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_gpu(seed, dtype):
    dev = "cuda"
    ws = [torch.randn(r, d, device=dev, dtype=dtype, requires_grad=True) for r, d in [(100_000, 64), (5000, 32)]]
    ids = [torch.randint(0, r, (256, 50), device=dev) for r in (100_000, 5000)]
    go = torch.randn(256, 50, 96, device=dev, dtype=dtype)
    out = gather_concat(ws, ids, padding_idx=0)
    ref = gather_concat_reference(ws, ids, padding_idx=0)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    gk = torch.autograd.grad(out, ws, go)
    gr = torch.autograd.grad(ref, ws, go)
    for a, b in zip(gk, gr):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)
    out = gather_sum([ws[0], ws[0]], [ids[0], ids[0].flip(0)])
    torch.testing.assert_close(out.float(), gather_sum_reference([ws[0], ws[0]], [ids[0], ids[0].flip(0)]).float(),
                               rtol=1e-2, atol=1e-2)
