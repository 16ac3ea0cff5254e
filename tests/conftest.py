"""Shared test setup. TRITON_INTERPRET must be set before anything imports triton: Triton reads it
when ``@triton.jit`` decorates, so it is the very first thing here (an explicit
TRITON_INTERPRET=0 in the environment, e.g. on a GPU machine, is respected)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def seed():
    """Seed torch, random and numpy; returns the seed."""
    value = 1234
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
    return value


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped where CUDA is unavailable."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def poison(monkeypatch):
    """Kernel output buffers are allocated filled with NaN / sentinel ints, so unwritten elements show."""
    from specc.kernels import _common
    monkeypatch.setattr(_common, "POISON", True)
    return True


@pytest.fixture
def assert_oracle():
    """``check(kernel, reference, truth, atol, rtol, what)``: |truth - kernel| <= |truth - ref| + tol elementwise."""
    def check(kernel, reference, truth, atol=1e-5, rtol=1e-4, what="value"):
        k = kernel.detach().double().cpu()
        r = reference.detach().double().cpu()
        t = truth.detach().double().cpu()
        assert k.shape == t.shape == r.shape, (what, k.shape, r.shape, t.shape)
        fin = torch.isfinite(t)
        assert torch.equal(torch.isfinite(k), fin), f"{what}: kernel's non-finite elements differ from the truth's"
        ek = (t[fin] - k[fin]).abs()
        er = (t[fin] - r[fin]).abs()
        tol = atol + rtol * t[fin].abs()
        bad = ek > er + tol
        assert not bad.any(), (f"{what}: {int(bad.sum())}/{bad.numel()} elements beyond the oracle bound; "
                               f"worst excess {(ek - er - tol).max().item():.3e}")
    return check
