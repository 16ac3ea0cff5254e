"""The sampled evaluation protocol of the SASRec and BERT4Rec papers: each target is ranked among `negatives`
items drawn uniformly from those its sequence does not hold (exactly, by rank among the unseen ids: no rejection
rounds that a nearly complete history could exhaust).

The draws are a counter-based hash of (seed, the row's items, draw number), not a stateful generator: a row gets
the same negatives whatever the batch size, the order of the rows, the padding of its batch or the number of
processes evaluating them. "Never interacted with" is the row's whole history as the batch holds it (the evaluation
reads whole rows for this protocol, not only the model's window)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from specc.errors import DataError

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


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
    """[B, negatives] ids in [1, n_items), none of them in the row's `items` [B, L] nor its `target` [B]: each a
    uniform draw (with replacement) among the row's unseen items, however few of them are left."""
    seen = torch.cat([items.long(), target.long()[:, None]], 1)
    base = row_keys(seen, seed)
    below, unseen = _unseen_below(seen, n_items)
    if bool((unseen < 1).any()):
        raise DataError([f"a sequence holds every item of the catalog ({n_items - 1}): no unseen item is left to "
                         "draw sampled negatives from; use the full protocol"], "batch")
    draw = torch.arange(negatives, device=items.device)
    counter = base[:, None] + draw[None] * _signed(_GOLDEN)
    rank = (_mix(counter) & ((1 << 62) - 1)) % unseen[:, None]          # the rank-th unseen item, 0-based
    # the rank-th unseen id is rank + 1 plus the number of seen ids with at most rank unseen ids below them
    return rank + 1 + torch.searchsorted(below, rank, right=True)


def unseen_count(seen: torch.Tensor, n_items: int) -> torch.Tensor:
    """[B]: how many catalog items (ids 1..n_items-1) each row of `seen` [B, L] (0-padded) does not hold."""
    return _unseen_below(seen.long(), n_items)[1]


def _unseen_below(seen: torch.Tensor, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row's distinct seen ids in increasing order, how many unseen catalog ids lie below each
    (non-decreasing; padded with n_items), and how many catalog ids the row has not seen."""
    ordered = seen.sort(1).values
    first = (ordered != 0) & (ordered != F.pad(ordered, (1, 0))[:, :-1])
    distinct = torch.where(first, ordered, n_items).sort(1).values
    places = torch.arange(1, seen.shape[1] + 1, device=seen.device)[None]
    below = torch.where(distinct < n_items, distinct - places, n_items)
    return below, n_items - 1 - first.sum(1)


def ranks_as_top_ids(scores: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k] top ids that hold `target` at its rank among the candidates (`scores` [B, 1 + negatives], the
    target's score first), -1 elsewhere: the form the ranking metrics read. A tie counts against the target."""
    rank = (scores[:, 1:] >= scores[:, :1]).sum(1)          # 0-based
    top = torch.full((scores.shape[0], k), -1, dtype=torch.int64, device=scores.device)
    hit = rank < k
    top[hit, rank[hit]] = target.long()[hit]
    return top
