"""Target construction for causal/mlm/plm/rtd, and the samplers' distributions and logQ values."""
import math

import pytest
import torch

import specc
from specc.nn.masking import causal_targets, mlm_positions, plm_positions
from specc.nn.samplers import Sampler
from test_leakage import SCHEMA, model_for
from helpers import random_batch


def test_causal_targets_shift_by_one_and_stop_before_padding():
    items = torch.tensor([[5, 6, 7, 0], [3, 0, 0, 0]])
    where, targets = causal_targets(items, torch.tensor([3, 1]))
    assert where.tolist() == [[True, True, False, False], [False, False, False, False]]
    assert targets[0, :2].tolist() == [6, 7]


def test_mlm_masks_the_right_fraction_only_real_positions_and_at_least_one():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 50, (4000,), generator=g)
    masked = mlm_positions(lengths, 50, 0.2, g)
    valid = torch.arange(50)[None] < lengths[:, None]
    assert not (masked & ~valid).any()
    assert (masked.sum(1) >= 1).all()
    assert abs(masked.sum().item() / valid.sum().item() - 0.2) < 0.02


def test_plm_attention_hides_every_target_from_its_own_prediction():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([10, 7, 1, 0])
    masked, attention = plm_positions(lengths, 10, 0.3, 3, g)
    valid = torch.arange(10)[None] < lengths[:, None]
    assert not (masked & ~valid).any() and masked[:3].any(1).all()
    unmasked_q = ~masked & valid
    assert not (attention & masked[:, None, :] & unmasked_q[:, :, None]).any()   # context never sees targets
    assert not (attention & ~valid[:, None, :] & valid[:, :, None]).any()      # nobody real sees padding
    # targets see each other only in one direction of a random order: no pair sees both ways
    both = attention & attention.transpose(1, 2) & masked[:, :, None] & masked[:, None, :]
    assert not (both & ~torch.eye(10, dtype=torch.bool)).any()
    assert attention.any(-1).all()                                        # every row attends somewhere (no NaN)


@pytest.mark.parametrize("masking", ["mlm", "plm", "rtd"])
def test_masked_training_predicts_only_masked_items(masking, seed):
    model = model_for({"kind": "transformer", "architecture": "native" if masking != "rtd" else "electra",
                       "d_model": 16, "n_head": 2, "n_layer": 1}, masking).train()
    seen = {}
    original = model.next_item.loss

    def spy(h, weight, target, backend, generator=None):
        seen["target"] = target
        return original(h, weight, target, backend, generator)
    model.next_item.loss = spy
    batch = random_batch(model, B=8)
    out = model(batch)
    items = batch["items"]
    assert set(seen["target"].tolist()) <= set(items[items > 0].tolist())
    assert 0 < len(seen["target"]) < (items > 0).sum()
    if masking == "rtd":
        assert set(out["losses"]) == {"next_item", "rtd_discriminator"}
        out["loss"].backward()
        assert model.discriminator.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["uniform", "log_uniform", "popularity"])
def test_catalog_samplers_follow_their_distribution_and_report_log_expected_counts(kind):
    C, S = 30, 200_000
    counts = torch.arange(C, dtype=torch.float32) % 7 * 10
    sampler = Sampler(kind, C, S)
    targets = torch.tensor([1, 5, 29])
    negatives, logq_neg, logq_target = sampler.sample(targets, counts, torch.Generator().manual_seed(0))
    q = sampler.probabilities(counts)
    assert negatives.min() >= 1 and negatives.max() < C and q[0] == 0
    freq = torch.bincount(negatives, minlength=C).double() / S
    assert torch.allclose(freq[1:], q[1:], atol=4e-3)
    assert torch.allclose(logq_target.double(), torch.log(S * q[targets]), atol=1e-5)
    assert torch.allclose(logq_neg[:50].double(), torch.log(S * q[negatives[:50]]), atol=1e-5)
    if kind == "log_uniform":
        assert math.isclose(q[1].item(), math.log(2) / math.log(C), rel_tol=1e-9)


def test_in_batch_and_mixed_samplers_use_the_batch_targets():
    targets = torch.tensor([3, 3, 4, 9])
    neg, logq_neg, logq_t = Sampler("in_batch", 20, 0).sample(targets)
    assert neg.tolist() == targets.tolist()
    assert torch.allclose(logq_t, torch.log(torch.tensor([2.0, 2.0, 1.0, 1.0])))
    neg, logq_neg, logq_t = Sampler("mixed", 20, 5).sample(targets, generator=torch.Generator().manual_seed(0))
    assert neg[:4].tolist() == targets.tolist() and len(neg) == 9
    assert torch.allclose(logq_t[0], torch.log(torch.tensor(2.0 + 5 / 19)))


def test_popularity_sampler_counts_are_saved_with_the_model():
    spec = {"specc": 1, "inputs": {"max_sequence_length": 4}, "body": {"kind": "gru", "d_model": 8},
            "tasks": [{"kind": "next_item", "loss": {"kind": "sampled_softmax", "negatives": 5,
                                                     "sampler": "popularity"}}]}
    model = specc.build(spec, SCHEMA)
    assert "next_item.item_counts" in model.state_dict()


@pytest.mark.parametrize("arch", ["native", "xlnet"])
def test_plm_predictions_never_see_the_targets(arch, seed):
    model = model_for({"kind": "transformer", "architecture": arch, "d_model": 16, "n_head": 2, "n_layer": 2},
                      "plm").eval()
    batch, lengths = model.prepare(random_batch(model, B=4, min_len=6))
    masked, attention = plm_positions(lengths, 8, 0.3, 2, torch.Generator().manual_seed(3))
    other = dict(batch)
    other["items"] = torch.where(masked, (batch["items"] % 49) + 1, batch["items"])
    other["cats"] = torch.where(masked, (batch["cats"] % 6) + 1, batch["cats"])
    with torch.no_grad():
        a = model.encode(batch, lengths, masked, attention)
        b = model.encode(other, lengths, masked, attention)
    torch.testing.assert_close(a[masked], b[masked])
