"""Every public kernel rejects what would read outside its tables or silently mean something else, the same
way on both paths; the loss kernels keep the reference's gradient precision at low temperatures; top-k
scores are differentiable."""
import numpy as np
import pytest
import torch

from specc.kernels import (gather_concat, gather_sum, linear_cross_entropy, linear_cross_entropy_cpu,
                           linear_cross_entropy_reference, sampled_softmax_loss, sampled_softmax_loss_reference,
                           topk_scores)

BACKENDS = ["triton", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", [gather_concat, gather_sum], ids=["concat", "sum"])
@pytest.mark.parametrize("bad", [-1, 10, 10**8])
def test_gathers_reject_ids_outside_their_table(backend, fn, bad):
    tables = [torch.randn(10, 8, requires_grad=True), torch.randn(30, 8)]
    ids = [torch.tensor([[1, 2, bad]]), torch.tensor([[0, 29, 3]])]
    with pytest.raises(IndexError, match=r"ids of table 0 must lie in \[0, 10\)"):
        fn(tables, ids, padding_idx=0, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gathers_take_their_padding_id_even_outside_the_table_and_reject_float_ids(backend):
    table = torch.randn(10, 8)
    out = gather_concat([table], [torch.tensor([3, -1])], padding_idx=-1, backend=backend)
    torch.testing.assert_close(out, torch.stack([table[3], torch.zeros(8)]))
    with pytest.raises(TypeError, match="int32 or int64"):
        gather_sum([table], [torch.tensor([1.0, 2.0])], backend=backend)
    with pytest.raises(ValueError, match="same shape"):
        gather_concat([table, table], [torch.tensor([1, 2]), torch.tensor([1])], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_losses_reject_targets_and_negatives_outside_the_catalog(backend):
    h, w = torch.randn(4, 8), torch.randn(20, 8)
    with pytest.raises(IndexError, match=r"target must lie in \[0, 20\)"):
        linear_cross_entropy(h, w, torch.tensor([1, -1, 3, -100]), backend=backend)   # -100 is ignore_index
    with pytest.raises(IndexError, match="target"):
        linear_cross_entropy_cpu(h, w, torch.tensor([1, 20, 3, 4]))
    with pytest.raises(IndexError, match=r"negatives must lie in \[0, 20\)"):
        sampled_softmax_loss(h, w, torch.tensor([1, 2, 3, 4]), torch.tensor([5, -1]), backend=backend)
    with pytest.raises(TypeError, match="one dtype"):
        linear_cross_entropy(h, w.double(), torch.tensor([1, 2, 3, 4]), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampled_softmax_checks_the_logq_shapes(backend):
    h, w, t, neg = torch.randn(4, 8), torch.randn(20, 8), torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7])
    with pytest.raises(ValueError, match=r"logq_negatives must be \[3\]"):
        sampled_softmax_loss(h, w, t, neg, logq_negatives=torch.zeros(2), backend=backend)
    with pytest.raises(ValueError, match=r"logq_target must be \[4\]"):
        sampled_softmax_loss(h, w, t, neg, logq_target=torch.zeros(4, 1), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_int32_targets_give_the_int64_result(backend, seed):
    h, w = torch.randn(9, 8), torch.randn(20, 8)
    t = torch.randint(0, 20, (9,))
    torch.testing.assert_close(linear_cross_entropy(h, w, t.int(), backend=backend),
                               linear_cross_entropy(h, w, t, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_k_must_be_an_integer_and_exclude_must_hold_ids(backend):
    h, w = torch.randn(3, 8), torch.randn(20, 8)
    for k in (3.7, True, "3"):
        with pytest.raises(TypeError, match="k must be an int"):
            topk_scores(h, w, k, backend=backend)
    assert topk_scores(h, w, np.int64(4), backend=backend)[1].shape == (3, 4)
    with pytest.raises(TypeError, match="exclude"):
        topk_scores(h, w, 4, exclude=torch.zeros(3, 2), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_scores_are_differentiable(backend, seed):
    h = torch.randn(5, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    exclude = torch.randint(0, 50, (5, 30))
    scores, ids = topk_scores(h, w, 25, exclude=exclude, backend=backend)   # some rows run out: id -1 slots
    g = torch.randn_like(scores)
    gh, gw = torch.autograd.grad(scores.masked_fill(ids < 0, 0.0), [h, w], g)
    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    picked = (h64[:, None] * w64[ids.clamp(min=0)]).sum(-1).masked_fill(ids < 0, 0.0)
    th, tw = torch.autograd.grad(picked, [h64, w64], g.double().masked_fill(ids < 0, 0.0))
    torch.testing.assert_close(gh.double(), th, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw.double(), tw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss,temperature", [("linear_cross_entropy", 0.05), ("linear_cross_entropy", 0.01),
                                              ("linear_cross_entropy", 0.002), ("sampled_softmax_loss", 0.05)])
def test_loss_gradients_keep_their_precision_at_low_temperature(seed, loss, temperature):
    """The backward rebuilds the softmax from the row max and log2 sum kept apart: a folded LSE of large
    logits rounds away the bits that the softmax of the top logits needs (it was 4000x the reference's
    error at T = 0.002). Elementwise both paths carry fp32 dot-product noise times 1/T, so the test
    compares each path's largest error relative to the largest gradient."""
    h, w = torch.randn(40, 48), torch.randn(300, 48) * 0.4
    t, neg = torch.randint(0, 300, (40,)), torch.randint(0, 300, (64,))
    kernel, reference, rest = {
        "linear_cross_entropy": (linear_cross_entropy, linear_cross_entropy_reference, (t,)),
        "sampled_softmax_loss": (sampled_softmax_loss, sampled_softmax_loss_reference, (t, neg))}[loss]
    results = []
    for fn, dtype in ((kernel, torch.float32), (reference, torch.float32), (reference, torch.float64)):
        hh, ww = h.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
        extra = {"backend": "triton"} if fn is kernel else {}
        results.append(torch.autograd.grad(fn(hh, ww, *rest, temperature=temperature, **extra), [hh, ww]))
    for i, what in enumerate(("d hidden", "d weight")):
        truth = results[2][i]
        err_kernel, err_reference = ((r[i].double() - truth).abs().max() / truth.abs().max() for r in results[:2])
        assert err_kernel <= 3 * err_reference + 1e-6, (what, err_kernel, err_reference)
