"""Dropout with a cheaper CPU mask: torch's CPU dropout draws one Bernoulli sample per element, several times
the cost of the layer's arithmetic on small recommendation models.

Here every element gets 15 random bits: an element is dropped when they fall below round(p * 2^15), so the rate
is p to within 2^-16 (0.1 runs as 0.100006), and kept elements are scaled by 1 / (1 - that rate), which keeps
the expectation exact. The bits come from numpy's SFC64 generator, 64 at a time (four elements per draw),
seeded per call from torch's generator, so `torch.manual_seed` still reproduces a run: measured on this
project's CPU, SFC64 gives 64 bits in 2.9 ns where torch's mt19937 `random_()` gives 32 in 3.9 ns. Rates
within 2^-16 of 0 or 1 run on torch's dropout.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

_LEVELS = 1 << 15


class Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drop = round(self.p * _LEVELS)
        # rates that 15 bits cannot express (p within 2^-16 of 0 or 1), and what torch does well: torch's own
        if not self.training or not 0 < drop < _LEVELS or x.device.type != "cpu" or not x.is_floating_point():
            return super().forward(x)
        n = x.numel()
        seed = int(torch.randint(0, 1 << 62, (1,)).item())   # from torch's generator: manual_seed reproduces it
        bits = np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.int16)[:n]
        keep = torch.from_numpy(bits).view(x.shape).bitwise_and_(_LEVELS - 1).ge_(drop)
        scale = _LEVELS / (_LEVELS - drop)
        return x.mul_(keep).mul_(scale) if self.inplace else x * keep * scale


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Swap every nn.Dropout in `module` (Hugging Face bodies included) for specc's Dropout, in place."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, child.inplace))
    return module
