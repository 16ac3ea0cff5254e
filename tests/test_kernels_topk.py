"""topk_scores: Triton (interpreter on CPU) vs the blockwise torch reference and a float64 truth."""
import importlib

import pytest
import torch

from specc.kernels import topk_scores, topk_scores_reference

topk_mod = importlib.import_module("specc.kernels.topk_scores")


def _truth(h, w, k, exclude):
    s = h.double() @ w.double().T
    if exclude is not None:
        s = s.scatter(1, exclude.long(), float("-inf"))
    kk = min(k, s.shape[1])
    v, i = s.topk(kk, dim=1)
    if kk < k:
        v = torch.cat([v, v.new_full((s.shape[0], k - kk), float("-inf"))], 1)
    return s, v


def _check(h, w, k, exclude, scores, ids, ref_scores, assert_oracle):
    N = h.shape[0]
    full, tv = _truth(h, w, k, exclude)
    assert scores.shape == ids.shape == (N, k)
    assert scores.dtype == torch.float32 and ids.dtype == torch.int64
    assert_oracle(scores, ref_scores, tv, atol=1e-5, rtol=1e-5, what="top-k scores")
    assert (scores[:, :-1] >= scores[:, 1:]).all() or not torch.isfinite(scores).all()
    real = ids >= 0
    assert torch.equal(real, torch.isfinite(scores)), "-inf slots must carry id -1 and only those"
    # every returned id really has the returned score
    got = full.gather(1, ids.clamp(min=0))
    assert ((got - scores.double()).abs()[real] < 1e-4).all()
    for r in range(N):
        row = ids[r][real[r]]
        assert row.unique().numel() == row.numel(), "duplicate ids in a row"
        if exclude is not None:
            assert not torch.isin(row, exclude[r]).any(), "an excluded id was returned"


@pytest.mark.parametrize("N,C,k,m", [
    (37, 1009, 10, 5),    # chunk-max threshold path, chunks of 16 columns (sub-tile reduction)
    (5, 2053, 1, 0),      # chunks of 256 columns = several tiles per chunk
    (9, 50, 64, 3),       # k >= C: tiny-catalog path, padded with -inf / -1
    (6, 5003, 10, 300),   # a whole history excluded (m >> k): K' = k + m candidates, chunk-max path
])
def test_topk_matches_reference(seed, poison, assert_oracle, N, C, k, m):
    d = 48
    h = torch.randn(N, d)
    w = torch.randn(C, d)
    exclude = None
    if m:
        exclude = torch.randint(0, C, (N, m))
        exclude[:, 0] = 0                  # caller padding: excludes item 0
        exclude[:, 1] = exclude[:, 2]      # duplicates are fine
    s, i = topk_scores(h, w, k, exclude, backend="triton")
    sr, ir = topk_scores_reference(h, w, k, exclude, block=128)
    _check(h, w, k, exclude, s, i, sr, assert_oracle)
    _check(h, w, k, exclude, sr, ir, sr, assert_oracle)
    if k >= C:  # exactly C - |distinct excluded| real entries, then -inf / -1 padding
        for r in range(N):
            n_real = C - exclude[r].unique().numel()
            assert (i[r, :n_real] >= 0).all() and (i[r, n_real:] == -1).all()
            assert torch.isinf(s[r, n_real:]).all()


def test_topk_exclusion_of_true_winners(seed, assert_oracle):
    """Excluding each row's true top items must surface the next ones."""
    h, w = torch.randn(6, 32), torch.randn(600, 32)
    best = (h @ w.T).topk(8, dim=1).indices
    s, i = topk_scores(h, w, 4, best, backend="triton")
    sr, _ = topk_scores_reference(h, w, 4, best)
    _check(h, w, 4, best, s, i, sr, assert_oracle)


def test_topk_ties_overflow_fallback(seed, assert_oracle):
    """All-equal scores overflow the candidate buffer; those rows fall back to the exact reference."""
    h = torch.randn(7, 16)
    w = torch.randn(1, 16).expand(1009, 16).contiguous()
    s, i = topk_scores(h, w, 5, backend="triton")
    sr, _ = topk_scores_reference(h, w, 5)
    _check(h, w, 5, None, s, i, sr, assert_oracle)


def test_topk_dispatch(seed, monkeypatch):
    h, w = torch.randn(4, 16), torch.randn(100, 16)

    def boom(*a, **k):
        raise AssertionError("triton path taken")

    monkeypatch.setattr(topk_mod, "_topk_triton", boom)
    topk_scores(h, w, 3, backend="torch")
    with pytest.raises(AssertionError, match="triton path"):
        topk_scores(h, w, 3)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    topk_scores(h, w, 3)
    with pytest.raises(ValueError):
        topk_scores(h, w, 0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_topk_gpu(seed, dtype, assert_oracle):
    h = torch.randn(1000, 128, device="cuda", dtype=dtype)
    w = torch.randn(200_003, 128, device="cuda", dtype=dtype)
    ex = torch.randint(0, 200_003, (1000, 20), device="cuda")
    s, i = topk_scores(h, w, 100, ex)
    sr, ir = topk_scores_reference(h, w, 100, ex)
    full = h.double() @ w.double().T
    full.scatter_(1, ex, float("-inf"))
    tv = full.topk(100, dim=1).values
    tol = 1e-3 * tv.abs().max().item()
    assert ((s.double() - tv).abs() <= (sr.double() - tv).abs() + tol).all()
    assert ((full.gather(1, i) - s.double()).abs() <= tol + (sr.double() - tv).abs().max()).all()
