"""Built-in example data with real sequential structure.

Sessions are walks on a random sparse Markov chain over the item ids 1..C-1 (0 is padding): every item has a
few likely successors with Dirichlet weights, mixed with a Zipf popularity prior (which also picks the start
item). Every other column is derived from the items, so side features carry signal:

- categorical list columns: a fixed random map item -> value (1..card-1);
- continuous list columns: an item-dependent value in [0, 1] plus small noise;
- scalar categorical / continuous context: random; id-like ints without a domain: the row number;
- binary targets: the parity of the last item's first categorical side value (or of the item id), 10 % flipped;
- regression targets: the mean of the session's item values plus noise.

`optimum.json` holds the Bayes-optimal Recall@10 / NDCG@10 for predicting each valid session's last item from
the one before it (the top 10 of the true transition row) -- expected and realised -- and the same for a
popularity baseline (the 10 most frequent items of the training data), so a trained model can be placed
between the two.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from specc.errors import Issue, SpecError, UserError
from specc.schema import Column, Schema

N_SUCCESSORS = 4          # likely successors per item
DIRICHLET_ALPHA = 0.5     # their weights (small: a peaked row)
POPULARITY_MIX = 0.1      # share of each transition drawn from the popularity prior instead
ZIPF_EXPONENT = 1.0
TARGET_NOISE = 0.1


def default_schema() -> Schema:
    """The columns of specs/schemas/ecommerce.pbtxt, built in Python (an installed wheel has no specs/)."""
    f = frozenset
    return Schema((
        Column("session_id", f({"session", "id"}), "int"),
        Column("item_id-list", f({"item", "id", "categorical", "list"}), "int", True, 1000, (1, 20)),
        Column("category-list", f({"item", "categorical", "list"}), "int", True, 50, (1, 20)),
        Column("price-list", f({"item", "continuous", "list"}), "float", True, None, (1, 20)),
        Column("weekday", f({"context", "categorical"}), "int", False, 8),
        Column("user_age", f({"user", "continuous"}), "float"),
        Column("purchase", f({"binary_classification", "target"}), "int"),
        Column("revenue", f({"regression", "target"}), "float"),
    ), source=None)


@dataclass
class SynthReport:
    out_dir: str
    train_path: str
    valid_path: str
    schema_path: str
    optimum_path: str
    item_column: str
    n_items: int                 # the catalogue size (cardinality, id 0 included as padding)
    n_train: int
    n_valid: int
    optimum: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        o, pop = self.optimum, self.optimum.get("popularity", {})
        return (f"wrote {self.n_train} train / {self.n_valid} valid sessions over {self.n_items - 1} items to "
                f"{self.out_dir}\n  train:  {self.train_path}\n  valid:  {self.valid_path}\n  schema: {self.schema_path}"
                f"\n  best possible on valid (Bayes-optimal): recall@10 {o.get('recall@10', 0):.3f}, "
                f"ndcg@10 {o.get('ndcg@10', 0):.3f}; popularity: recall@10 {pop.get('recall@10', 0):.3f}, "
                f"ndcg@10 {pop.get('ndcg@10', 0):.3f}  ({self.optimum_path})")


class _Chain:
    """The sparse Markov chain: successors [C, k], their weights [C, k], a popularity prior [C]."""

    def __init__(self, n_items: int, rng: np.random.Generator):
        C = n_items
        ranks = rng.permutation(C - 1) + 1                       # popularity rank of items 1..C-1
        pop = np.zeros(C)
        pop[1:] = 1.0 / ranks ** ZIPF_EXPONENT
        self.pop = pop / pop.sum()
        k = min(N_SUCCESSORS, C - 1)
        # successors drawn from a flattened popularity, so that popularity alone predicts poorly
        flat = np.sqrt(self.pop)
        flat /= flat.sum()
        self.succ = rng.choice(C, size=(C, k), p=flat)
        self.weights = rng.dirichlet(np.full(k, DIRICHLET_ALPHA), size=C)
        self._cum_w = np.cumsum(self.weights, axis=1)
        self._cum_pop = np.cumsum(self.pop)

    def start(self, n: int, rng) -> np.ndarray:
        return self._draw_pop(rng.random(n))

    def _draw_pop(self, u):
        return np.minimum(np.searchsorted(self._cum_pop, u * self._cum_pop[-1], side="right"), len(self.pop) - 1)

    def step(self, prev: np.ndarray, rng) -> np.ndarray:
        n = len(prev)
        from_pop = rng.random(n) < POPULARITY_MIX
        u = rng.random(n)[:, None]
        pick = np.minimum((u > self._cum_w[prev]).sum(axis=1), self.succ.shape[1] - 1)
        nxt = self.succ[prev, pick]
        nxt[from_pop] = self._draw_pop(rng.random(int(from_pop.sum())))
        return np.maximum(nxt, 1)  # 0 never occurs (pop[0] == 0); keep it impossible after float edge cases

    def row(self, i: int) -> dict[int, float]:
        """The true transition probabilities of item i that can reach the top 10: its successors and the
        10 most popular items (every other item has probability mix * pop below the tenth of those)."""
        probs: dict[int, float] = {}
        for j, w in zip(self.succ[i], self.weights[i]):
            probs[int(j)] = probs.get(int(j), 0.0) + (1 - POPULARITY_MIX) * float(w)
        top_pop = np.argsort(-self.pop)[:10]
        for j in set(probs) | {int(j) for j in top_pop}:
            probs[j] = probs.get(j, 0.0) + POPULARITY_MIX * float(self.pop[j])
        probs.pop(0, None)
        return probs


def walk_sessions(chain, n: int, lo: int, hi: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n walks of `chain` (anything with `start(n, rng)` and `step(items, rng)`) with lengths uniform in [lo, hi]:
    a padded [n, hi] matrix and the lengths."""
    lengths = rng.integers(lo, hi + 1, size=n)
    seq = np.zeros((n, hi), dtype=np.int64)
    seq[:, 0] = chain.start(n, rng)
    for t in range(1, hi):
        seq[:, t] = chain.step(seq[:, t - 1], rng)
    seq[np.arange(hi)[None, :] >= lengths[:, None]] = 0
    return seq, lengths


def _ndcg_at(rank: int | None, k: int = 10) -> float:
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def _optimum(chain: _Chain, valid_seq, valid_len, train_seq, k: int = 10) -> dict:
    prev = valid_seq[np.arange(len(valid_len)), valid_len - 2]
    last = valid_seq[np.arange(len(valid_len)), valid_len - 1]
    exp_r = exp_n = real_r = real_n = 0.0
    cache: dict[int, tuple[list[int], list[float]]] = {}
    for p, t in zip(prev.tolist(), last.tolist()):
        if p not in cache:
            row = chain.row(p)
            top = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
            cache[p] = ([j for j, _ in top], [q for _, q in top])
        ids, probs = cache[p]
        exp_r += sum(probs)
        exp_n += sum(q / math.log2(r + 2) for r, q in enumerate(probs))
        rank = ids.index(t) + 1 if t in ids else None
        real_r += rank is not None
        real_n += _ndcg_at(rank, k)
    n = len(prev)
    # popularity baseline: the k most frequent items of the training data
    counts = np.bincount(train_seq[train_seq > 0], minlength=len(chain.pop))
    counts[0] = 0
    top_pop = [int(j) for j in np.argsort(-counts, kind="stable")[:k]]
    pop_r = pop_n = 0.0
    for t in last.tolist():
        rank = top_pop.index(t) + 1 if t in top_pop else None
        pop_r += rank is not None
        pop_n += _ndcg_at(rank, k)
    return {
        "task": f"predict each valid session's last item from the one before it (Markov order 1), top-{k}",
        "n_sessions": n,
        f"expected_recall@{k}": exp_r / n, f"expected_ndcg@{k}": exp_n / n,
        f"recall@{k}": real_r / n, f"ndcg@{k}": real_n / n,
        "popularity": {f"recall@{k}": pop_r / n, f"ndcg@{k}": pop_n / n},
        "chain": {"successors": int(chain.succ.shape[1]), "dirichlet_alpha": DIRICHLET_ALPHA,
                  "popularity_mix": POPULARITY_MIX, "zipf_exponent": ZIPF_EXPONENT},
    }


def _columns_for(schema: Schema, chain: _Chain, seq, lengths, maps, rng, row0: int):
    """Arrow arrays for every column, derived from the item matrix."""
    import pyarrow as pa
    n, width = seq.shape
    mask = np.arange(width)[None, :] < lengths[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    last = seq[np.arange(n), lengths - 1]
    cat_driver = maps.get("_first_cat")
    item_value = maps["_item_value"]

    def as_list(mat, typ):
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(mat[mask], typ))

    out = {}
    for c in schema.columns:
        if c.is_item_id and c.is_list:
            out[c.name] = as_list(seq, pa.int64())
        elif c.is_target and c.is_list:                        # a label per interaction
            driver = cat_driver[seq] if cat_driver is not None else seq
            if c.is_continuous or c.dtype == "float" or "regression" in c.tags:
                val = np.clip(item_value[seq] + rng.normal(0, 0.05, seq.shape), 0, 1).astype(np.float32)
                out[c.name] = as_list(val, pa.float32())
            else:
                label = ((driver % 2) == 1) ^ (rng.random(seq.shape) < TARGET_NOISE)
                out[c.name] = as_list(label, pa.bool_()) if c.dtype == "bool" else as_list(label.astype(np.int64),
                                                                                           pa.int64())
        elif c.is_target:
            driver = cat_driver[last] if cat_driver is not None else last
            flip = rng.random(n) < TARGET_NOISE
            if c.is_continuous or c.dtype == "float" or "regression" in c.tags:
                session_mean = (item_value[seq] * mask).sum(1) / lengths
                val = np.clip(session_mean + rng.normal(0, 0.05, n), 0, 1).astype(np.float32)
                out[c.name] = pa.array(val, pa.float32())
            else:
                label = ((driver % 2) == 1) ^ flip
                out[c.name] = pa.array(label, pa.bool_()) if c.dtype == "bool" else pa.array(label.astype(np.int64))
        elif c.is_list:
            if c.dtype == "string":
                out[c.name] = as_list(np.char.add("v", seq.astype(str)), pa.string())
            elif c.cardinality is not None:
                out[c.name] = as_list(maps[c.name][seq], pa.int64())
            elif c.dtype == "float" or (c.is_continuous and c.int_range is None):
                noisy = item_value[seq] * maps[c.name][0] + maps[c.name][1] + rng.normal(0, 0.02, seq.shape)
                out[c.name] = as_list(noisy.astype(np.float32), pa.float32())
            else:                                               # e.g. timestamps: increasing per session
                lo, hi = c.int_range or (0, 2 ** 62)
                steps = np.cumsum(rng.integers(0, 600, seq.shape), axis=1)
                start = rng.integers(lo, max(lo + 1, hi - int(steps.max()) + 1), (n, 1))
                out[c.name] = as_list(np.minimum(start + steps, hi), pa.int64())
        else:
            if c.dtype == "string":
                out[c.name] = pa.array([f"v{int(v)}" for v in rng.integers(0, 10, n)], pa.string())
            elif c.cardinality is not None:
                lo = 1 if c.cardinality > 1 else 0
                out[c.name] = pa.array(rng.integers(lo, max(c.cardinality, lo + 1), n).astype(np.int64))
            elif c.int_range is not None:                       # e.g. an age with int_domain [0, 120]
                out[c.name] = pa.array(rng.integers(c.int_range[0], c.int_range[1] + 1, n).astype(np.int64))
            elif c.is_continuous or c.dtype == "float":
                out[c.name] = pa.array(rng.random(n).astype(np.float32), pa.float32())
            elif c.dtype == "bool":
                out[c.name] = pa.array(rng.random(n) < 0.5, pa.bool_())
            else:                                               # id-like ints (session_id): the row number
                out[c.name] = pa.array(np.arange(row0, row0 + n, dtype=np.int64))
    return pa.table(out)


def synthesize(schema: Schema | None, out_dir, *, n_train: int = 8000, n_valid: int = 1000, seed: int = 0,
               max_length: int | None = None) -> SynthReport:
    """Write `train.parquet`, `valid.parquet`, `schema.pbtxt` and `optimum.json` into `out_dir`."""
    import pyarrow.parquet as pq
    from specc.schema import load_schema, save_schema

    schema = default_schema() if schema is None else load_schema(schema)
    items = [c for c in schema.item_id_columns() if c.is_list]
    issues = []
    if len(items) != 1:
        found = ", ".join(repr(c.name) for c in schema.item_id_columns()) or "none"
        issues.append(Issue("$.schema", "item_id_missing" if not items else "item_id_ambiguous",
                            f"synthetic data needs exactly one list column tagged item_id (or item + id); found {found}",
                            "tag the session's item-id sequence column `item_id` (or `item` and `id`) and `list`"))
    elif items[0].cardinality is None or items[0].cardinality < 3:
        issues.append(Issue("$.schema", "no_cardinality",
                            f"item column {items[0].name!r} needs an int_domain with max >= 2 (the catalogue size)",
                            "set int_domain { max: N } on the item-id column", column=items[0].name))
    if n_train < 1 or n_valid < 1:
        issues.append(Issue("$.synth", "bad_size", "n_train and n_valid must be >= 1"))
    if issues:
        raise SpecError(issues, source=schema.source)
    item = items[0]
    C = int(item.cardinality)

    lo, hi = 2, 20
    if item.value_count is not None:
        lo = max(2, item.value_count[0] or 0)
        hi = item.value_count[1] or hi
    if max_length is not None:
        hi = min(hi, max(2, int(max_length)))
    lo = min(lo, hi)

    rng = np.random.default_rng(seed)
    chain = _Chain(C, rng)
    maps: dict = {"_item_value": rng.random(C)}
    maps["_item_value"][0] = 0.0
    for c in schema.columns:
        if c.is_list and not c.is_item_id and not c.is_target:
            if c.cardinality is not None:
                m = rng.integers(1 if c.cardinality > 1 else 0, max(c.cardinality, 2), size=C)
                m[0] = 0
                maps[c.name] = m
                if "_first_cat" not in maps:
                    maps["_first_cat"] = m
            elif c.is_continuous or c.dtype == "float":
                maps[c.name] = (rng.uniform(0.5, 1.0), rng.uniform(0.0, 0.2))   # scale, shift per column

    train_seq, train_len = walk_sessions(chain, n_train, lo, hi, rng)
    valid_seq, valid_len = walk_sessions(chain, n_valid, lo, hi, rng)

    out_dir = os.fspath(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot create the folder ({exc.strerror})") from None
    paths = {k: os.path.join(out_dir, f) for k, f in
             [("train", "train.parquet"), ("valid", "valid.parquet"), ("schema", "schema.pbtxt"),
              ("optimum", "optimum.json")]}
    # rewriting an earlier `data synth` output is fine; replacing someone's own data is not
    theirs = [os.path.basename(p) for k, p in paths.items() if k != "optimum" and os.path.exists(p)]
    if theirs and not os.path.exists(paths["optimum"]):
        raise UserError(f"--out {out_dir} already holds {', '.join(theirs)} that specc data synth did not write; "
                        "choose an empty folder")
    pq.write_table(_columns_for(schema, chain, train_seq, train_len, maps, rng, 0), paths["train"])
    pq.write_table(_columns_for(schema, chain, valid_seq, valid_len, maps, rng, n_train), paths["valid"])
    save_schema(schema, paths["schema"])
    optimum = _optimum(chain, valid_seq, valid_len, train_seq)
    optimum.update({"seed": seed, "n_items": C, "item_column": item.name, "n_train": n_train, "n_valid": n_valid,
                    "session_length": [lo, hi]})
    with open(paths["optimum"], "w") as f:
        json.dump(optimum, f, indent=2)
        f.write("\n")
    return SynthReport(out_dir=out_dir, train_path=paths["train"], valid_path=paths["valid"],
                       schema_path=paths["schema"], optimum_path=paths["optimum"], item_column=item.name,
                       n_items=C, n_train=n_train, n_valid=n_valid, optimum=optimum)
