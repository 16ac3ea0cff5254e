"""Data sets for the quality matrix (benchmarks/quality.py): Markov-chain sessions with a known Bayes-optimal ranking.

Unlike `specc data synth`, every shape is a parameter: catalog size, session lengths, popularity skew, how peaked
the transitions are, and whether the side features (an item category and a raw-scale price) carry the chain's
structure or are pure noise. The next item depends on the previous one only:

    P(j | i) = a · succ_i(j) + b · T[cat(i), cat(j)] · pop(j) / pop(cat(j)) + m · pop(j),   a + b + m = 1

succ_i: a few successors of i with Dirichlet weights; T: a sparse category-to-category chain; pop: Zipf. So the
Bayes-optimal top 10 for a session's last item is the top 10 of row P(· | previous item), computed exactly.
With `side="informative"` the category column is cat(item) and the price a log-normal function of the category
(units 1..1000, not scaled to [0, 1]); with `side="noise"` both are drawn afresh for every event.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from specc.synth import walk_sessions


@dataclass(frozen=True)
class Shape:
    n_items: int                   # catalog size, padding id 0 included
    n_train: int
    n_valid: int = 1000
    lengths: tuple[int, int] = (2, 20)
    zipf: float = 1.0              # popularity skew
    successors: int = 4
    alpha: float = 0.5             # Dirichlet concentration of the successor weights (small: peaked)
    via_category: float = 0.2      # b: share of a transition that goes through the category chain
    popularity: float = 0.1        # m: share drawn from the popularity prior
    side: str = "informative"      # or "noise"
    seed: int = 0

    @property
    def n_categories(self) -> int:
        return max(3, int(round(math.sqrt(self.n_items) / 2)))


class Chain:
    def __init__(self, s: Shape, rng: np.random.Generator):
        C, K = s.n_items, s.n_categories
        self.s = s
        pop = np.zeros(C)
        pop[1:] = 1.0 / (rng.permutation(C - 1) + 1.0) ** s.zipf
        self.pop = pop / pop.sum()
        self.cat = np.concatenate([[0], rng.integers(1, K, C - 1)])
        self.cat_mass = np.bincount(self.cat, weights=self.pop, minlength=K)
        flat = np.sqrt(self.pop) / np.sqrt(self.pop).sum()
        k = min(s.successors, C - 1)
        self.succ = rng.choice(C, size=(C, k), p=flat)
        self.weights = rng.dirichlet(np.full(k, s.alpha), size=C)
        # category chain: each category moves to 3 categories (Dirichlet weights), over categories with items
        live = np.flatnonzero(self.cat_mass > 0)
        self.cat_next = np.zeros((K, K))
        for c in range(K):
            to = rng.choice(live, size=min(3, len(live)), replace=False)
            self.cat_next[c, to] = rng.dirichlet(np.full(len(to), 0.5))
        # items ordered by category, with cumulative popularity, to draw "an item of category c by popularity"
        self.by_cat = np.argsort(self.cat, kind="stable")
        self.cum_by_cat = np.cumsum(self.pop[self.by_cat])
        self.cat_start = np.concatenate([[0.0], np.cumsum(self.cat_mass)])[:-1]
        self.cum_pop = np.cumsum(self.pop)
        self.cum_w = np.cumsum(self.weights, axis=1)
        self.cum_cat_next = np.cumsum(self.cat_next, axis=1)

    def row(self, i: int) -> np.ndarray:
        s = self.s
        a = 1.0 - s.via_category - s.popularity
        with np.errstate(divide="ignore", invalid="ignore"):
            via = np.where(self.cat_mass[self.cat] > 0, self.cat_next[self.cat[i], self.cat] * self.pop
                           / self.cat_mass[self.cat], 0.0)
        p = s.popularity * self.pop + s.via_category * via
        np.add.at(p, self.succ[i], a * self.weights[i])
        p[0] = 0.0
        return p

    def start(self, n: int, rng) -> np.ndarray:
        return self._search(self.cum_pop, rng.random(n) * self.cum_pop[-1])

    def step(self, prev: np.ndarray, rng) -> np.ndarray:
        s, n = self.s, len(prev)
        branch = rng.random(n)
        pick = np.minimum((rng.random(n)[:, None] > self.cum_w[prev]).sum(1), self.succ.shape[1] - 1)
        nxt = self.succ[prev, pick]
        via = branch < s.via_category
        if via.any():
            c = np.minimum((rng.random(int(via.sum()))[:, None] > self.cum_cat_next[self.cat[prev[via]]]).sum(1),
                           self.cat_next.shape[1] - 1)
            u = self.cat_start[c] + rng.random(len(c)) * self.cat_mass[c]
            nxt[via] = self.by_cat[self._search(self.cum_by_cat, u)]
        popular = (branch >= s.via_category) & (branch < s.via_category + s.popularity)
        nxt[popular] = self.start(int(popular.sum()), rng)
        return np.maximum(nxt, 1)

    @staticmethod
    def _search(cum, u):
        return np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)


def sessions(chain: Chain, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    return walk_sessions(chain, n, *chain.s.lengths, rng)


def optimum(chain: Chain, seq, lengths, k: int = 10) -> dict:
    rows = np.arange(len(lengths))
    prev, last = seq[rows, lengths - 2], seq[rows, lengths - 1]
    hits = ndcg = 0.0
    tops: dict[int, np.ndarray] = {}
    for p, t in zip(prev.tolist(), last.tolist()):
        if p not in tops:
            row = chain.row(p)
            top = np.argpartition(-row, k)[:k]
            tops[p] = top[np.argsort(-row[top], kind="stable")]
        where = np.flatnonzero(tops[p] == t)
        hits += len(where) > 0
        ndcg += 1.0 / math.log2(where[0] + 2) if len(where) else 0.0
    n = len(last)
    return {f"recall@{k}": hits / n, f"ndcg@{k}": ndcg / n}


def write(shape: Shape, out_dir: str) -> dict:
    """train.parquet, valid.parquet, schema.pbtxt and optimum.json in out_dir (skipped when already written)."""
    done = os.path.join(out_dir, "optimum.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    import pyarrow as pa
    import pyarrow.parquet as pq
    from specc.schema import Column, Schema, save_schema
    rng = np.random.default_rng(shape.seed)
    chain = Chain(shape, rng)
    price_of_cat = np.exp(rng.uniform(math.log(2), math.log(500), shape.n_categories))
    os.makedirs(out_dir, exist_ok=True)
    for name, n in (("train", shape.n_train), ("valid", shape.n_valid)):
        seq, lengths = sessions(chain, n, rng)
        mask = np.arange(seq.shape[1])[None, :] < lengths[:, None]
        if shape.side == "informative":
            cats = chain.cat[seq]
            price = price_of_cat[cats] * np.exp(rng.normal(0, 0.1, seq.shape))
        else:
            cats = rng.integers(1, shape.n_categories, seq.shape)
            price = np.exp(rng.uniform(math.log(2), math.log(500), seq.shape))
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        table = pa.table({
            "item_id-list": pa.ListArray.from_arrays(offsets, pa.array(seq[mask])),
            "category-list": pa.ListArray.from_arrays(offsets, pa.array(cats[mask].astype(np.int64))),
            "price-list": pa.ListArray.from_arrays(offsets, pa.array(price[mask].astype(np.float32))),
        })
        pq.write_table(table, os.path.join(out_dir, f"{name}.parquet"))
        if name == "valid":
            best = optimum(chain, seq, lengths)
    f = frozenset
    save_schema(Schema((
        Column("item_id-list", f({"item_id", "item", "categorical", "list"}), "int", True, shape.n_items,
               shape.lengths),
        Column("category-list", f({"item", "categorical", "list"}), "int", True, shape.n_categories, shape.lengths),
        Column("price-list", f({"item", "continuous", "list"}), "float", True, None, shape.lengths),
    ), source=None), os.path.join(out_dir, "schema.pbtxt"))
    result = {**best, "shape": asdict(shape)}
    with open(done, "w") as f:
        json.dump(result, f, indent=2)
    return result
