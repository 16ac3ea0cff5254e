"""Dropout whose CPU mask comes from one uniform draw: torch's CPU dropout (bernoulli) costs several times more."""
from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p >= 1.0:
            return torch.zeros_like(x)
        keep = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))   # 0 or 1/(1-p), in place
        return x * keep


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Swap every nn.Dropout in `module` (Hugging Face bodies included) for specc's Dropout, in place."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, child.inplace))
    return module
