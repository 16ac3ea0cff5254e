"""The sampled evaluation protocol of the SASRec and BERT4Rec papers: each target is ranked among `negatives`
items drawn uniformly from those its sequence does not hold.

The draws are a counter-based hash of (seed, the row's items, draw number), not a stateful generator: a row gets
the same negatives whatever the batch size, the order of the rows, the padding of its batch or the number of
processes evaluating them. "Never interacted with" is the row's whole history as the batch holds it (the evaluation
reads whole rows for this protocol, not only the model's window)."""
from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MAX_ROUNDS = 64


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 (multiplication wraps; shifts are made logical by masking)."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _signed(0xBF58476D1CE4E5B9)
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _signed(0x94D049BB133111EB)
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def row_keys(items: torch.Tensor, seed: int) -> torch.Tensor:
    """One 64-bit key per row of `items` [B, L], from its non-zero items in order and `seed` (padding 0s, wherever
    they are, leave the key as it is)."""
    key = torch.full(items.shape[:1], _signed((seed * _GOLDEN + 1) & _MASK64), dtype=torch.int64,
                     device=items.device)
    for column in items.long().unbind(1):
        key = torch.where(column != 0, _mix(key ^ column), key)
    return key


def sampled_negatives(items: torch.Tensor, target: torch.Tensor, n_items: int, negatives: int,
                      seed: int) -> torch.Tensor:
    """[B, negatives] ids in [1, n_items), none of them in the row's `items` [B, L] nor its `target` [B]."""
    seen = torch.cat([items.long(), target.long()[:, None]], 1)
    base = row_keys(seen, seed)
    ordered = seen.sort(1).values
    draw = torch.arange(negatives, device=items.device)
    out = torch.zeros(items.shape[0], negatives, dtype=torch.int64, device=items.device)
    todo = torch.ones_like(out, dtype=torch.bool)
    for round_ in range(_MAX_ROUNDS):
        counter = base[:, None] + (draw + round_ * negatives)[None] * _signed(_GOLDEN)
        candidate = (_mix(counter) & ((1 << 62) - 1)) % (n_items - 1) + 1
        at = torch.searchsorted(ordered, candidate).clamp(max=ordered.shape[1] - 1)
        fresh = todo & (ordered.gather(1, at) != candidate)
        out = torch.where(fresh, candidate, out)
        todo &= ~fresh
        if not bool(todo.any()):
            return out
    # only reachable when nearly the whole catalog is in one sequence, which compiling rules out
    raise ValueError("could not draw unseen negatives; use fewer negatives")


def ranks_as_top_ids(scores: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k] top ids that hold `target` at its rank among the candidates (`scores` [B, 1 + negatives], the
    target's score first), -1 elsewhere: the form the ranking metrics read. A tie counts against the target."""
    rank = (scores[:, 1:] >= scores[:, :1]).sum(1)          # 0-based
    top = torch.full((scores.shape[0], k), -1, dtype=torch.int64, device=scores.device)
    hit = rank < k
    top[hit, rank[hit]] = target.long()[hit]
    return top
