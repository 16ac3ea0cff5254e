"""How training targets are formed: causal shifts, masked (mlm/rtd) and permutation (plm) selections."""
from __future__ import annotations

import torch


def causal_targets(items: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position t predicts item t+1: returns (where [B, L] bool, targets [B, L])."""
    B, L = items.shape
    targets = torch.zeros_like(items)
    targets[:, :-1] = items[:, 1:]
    where = torch.arange(L, device=items.device)[None] < (lengths[:, None] - 1)
    return where, targets


def mlm_positions(lengths: torch.Tensor, L: int, probability: float, generator: torch.Generator | None = None):
    """Each real position masked with `probability`; every non-empty row gets at least one masked position."""
    device = lengths.device
    valid = torch.arange(L, device=device)[None] < lengths[:, None]
    masked = (torch.rand(lengths.shape[0], L, generator=generator).to(device) < probability) & valid
    empty = (masked.sum(1) == 0) & (lengths > 0)
    if empty.any():
        pick = (torch.rand(lengths.shape[0], generator=generator).to(device) * lengths.clamp(min=1)).long()
        masked[empty, pick[empty]] = True
    return masked


def plm_positions(lengths: torch.Tensor, L: int, probability: float, max_span_length: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """XLNet-style permutation LM: spans to predict and who may attend to whom.

    Returns (masked [B, L] bool, attention [B, L, L] bool, True where query i may attend to key j). Unmasked
    positions see every unmasked real position; masked positions see the unmasked ones and the masked ones
    earlier in a random order. The model replaces masked inputs by the mask embedding, so no target is visible
    to its own prediction.
    """
    B = lengths.shape[0]
    masked = torch.zeros(B, L, dtype=torch.bool)
    for b, n in enumerate(lengths.tolist()):
        cur = 0
        while cur < n:
            span = int(torch.randint(1, max_span_length + 1, (1,), generator=generator))
            context = max(span, round(span / probability))
            start = cur + int(torch.randint(0, context - span + 1, (1,), generator=generator))
            masked[b, start:min(start + span, n)] = True
            cur += context
        if n > 0 and not masked[b, :n].any():
            masked[b, int(torch.randint(0, n, (1,), generator=generator))] = True
    masked = masked.to(lengths.device)
    valid = torch.arange(L, device=lengths.device)[None] < lengths[:, None]
    order = torch.rand(B, L, generator=generator).to(lengths.device) + 1.0
    order = torch.where(masked, order, torch.zeros_like(order))   # unmasked first, masked in random order
    key_visible = valid[:, None, :] & (order[:, None, :] < order[:, :, None])
    unmasked_keys = valid[:, None, :] & ~masked[:, None, :]
    attention = torch.where(masked[:, :, None], key_visible, unmasked_keys)
    # every position sees itself: a masked one holds the mask embedding, not its item, and no row is left empty
    attention[:, torch.arange(L), torch.arange(L)] = True
    return masked, attention
