"""The optimizer and the learning-rate schedule a spec's `training` asks for."""
from __future__ import annotations

import torch


def build_optimizer(model, opt) -> torch.optim.Optimizer:
    """`opt` is the spec's training.optimizer (kind, lr, weight_decay)."""
    params = [p for p in model.parameters() if p.requires_grad]
    # one fused kernel per step instead of a handful of ops per parameter tensor (CPU and CUDA)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    if opt.kind == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=0.9, weight_decay=opt.weight_decay, fused=fused)
    cls = torch.optim.AdamW if opt.kind == "adamw" else torch.optim.Adam
    return cls(params, lr=opt.lr, weight_decay=opt.weight_decay, fused=fused)


def build_schedule(optimizer, total_steps: int, warmup: float, kind: str) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first `warmup` fraction of the steps, then linear decay to 0 or a constant rate."""
    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
