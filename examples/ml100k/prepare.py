#!/usr/bin/env python
"""Turns MovieLens 100K (RecBole atomic files) into specc / Transformers4Rec sequence data.

    python examples/ml100k/prepare.py [--src DIR_WITH_ml-100k.inter] [--out DIR]

Reads ``ml-100k.inter`` (user_id, item_id, rating, timestamp), ``ml-100k.item`` (genres in
``class``) and ``ml-100k.user`` (age, gender, occupation), and writes to ``--out`` (default
``examples/ml100k/data/``, git-ignored):

- ``train.parquet``: one row per user, its time-ordered sequence **without its last item**;
- ``valid.parquet``: one row per user, the full sequence (evaluation predicts the last item
  from the ones before it: leave-last-out);
- ``schema.pbtxt``: the Merlin schema in TF-metadata protobuf text format, with
  Transformers4Rec's tags (``item_id``, ``categorical``, ``list``, ``continuous``, ``user``,
  ``context``), ``int_domain.max`` = cardinality - 1 and ``value_count`` for list columns.

Columns: ``item_id-list`` (list<int64>), ``genre-list`` (list<int64>, the item's first genre),
``rating-list`` (list<float32>, (rating - 1) / 4 in [0, 1]), ``user_age`` (float32, min-max
scaled to [0, 1]), ``user_gender`` and ``user_occupation`` (int64). Categorical ids are 1..n
sorted by frequency (most frequent = 1), 0 is padding — as NVTabular's Categorify orders them,
which the ``log_uniform`` sampler assumes. Sequences are kept whole; models truncate them to
their ``max_sequence_length`` keeping the most recent items.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "data")
DEFAULT_SRC_CANDIDATES = [
    os.path.join(HERE, "..", "..", "..", "shared", "data", "ml-100k"),  # /work/main -> /work/shared
    os.path.join(HERE, "..", "..", "shared", "data", "ml-100k"),
]


def read_atomic(path: str) -> pd.DataFrame:
    """A RecBole atomic file: tab-separated, header ``name:type``; all read as strings first."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def frequency_codes(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """Maps values to 1..n by descending frequency (ties by value), 0 reserved for padding."""
    counts = values.value_counts()
    order = sorted(counts.index, key=lambda v: (-counts[v], str(v)))
    mapping = {v: i + 1 for i, v in enumerate(order)}
    return values.map(mapping).astype("int64"), order


def build(src: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    inter = read_atomic(os.path.join(src, "ml-100k.inter"))
    items = read_atomic(os.path.join(src, "ml-100k.item"))
    users = read_atomic(os.path.join(src, "ml-100k.user"))

    inter["rating"] = inter["rating"].astype("float64")
    inter["timestamp"] = inter["timestamp"].astype("float64").astype("int64")
    inter["row"] = np.arange(len(inter))

    # item ids: 1..n by interaction frequency
    inter["item"], item_order = frequency_codes(inter["item_id"])
    # genre: the item's first listed genre, coded by interaction frequency
    first_genre = items.set_index("item_id")["class"].str.split(" ").str[0].replace("", "unknown")
    inter["genre_raw"] = inter["item_id"].map(first_genre).fillna("unknown")
    inter["genre"], genre_order = frequency_codes(inter["genre_raw"])
    inter["rating01"] = ((inter["rating"] - 1.0) / 4.0).clip(0.0, 1.0).astype("float32")

    # users: age min-max scaled, gender and occupation coded by frequency among users
    users = users.copy()
    age = users["age"].astype("float64")
    users["user_age"] = ((age - age.min()) / max(age.max() - age.min(), 1e-12)).astype("float32")
    users["user_gender"], gender_order = frequency_codes(users["gender"])
    users["user_occupation"], occ_order = frequency_codes(users["occupation"])

    # time-ordered sequences per user (ties in timestamp keep the file's order)
    inter = inter.sort_values(["user_id", "timestamp", "row"], kind="mergesort")
    grouped = inter.groupby("user_id", sort=False)
    seqs = pd.DataFrame({
        "item_id-list": grouped["item"].apply(lambda s: s.to_numpy(np.int64)),
        "genre-list": grouped["genre"].apply(lambda s: s.to_numpy(np.int64)),
        "rating-list": grouped["rating01"].apply(lambda s: s.to_numpy(np.float32)),
    })
    seqs = seqs.join(users.set_index("user_id")[["user_age", "user_gender", "user_occupation"]], how="left")
    if seqs[["user_age", "user_gender", "user_occupation"]].isna().any().any():
        raise SystemExit("some users of ml-100k.inter are missing from ml-100k.user")
    seqs["user_gender"] = seqs["user_gender"].astype("int64")
    seqs["user_occupation"] = seqs["user_occupation"].astype("int64")
    # a stable row order: numeric user id
    seqs = seqs.loc[sorted(seqs.index, key=int)].reset_index(drop=True)

    lengths = seqs["item_id-list"].map(len)
    if lengths.min() < 2:
        raise SystemExit("every user needs at least 2 interactions for a leave-last-out split")
    train = seqs.copy()
    for col in ("item_id-list", "genre-list", "rating-list"):
        train[col] = seqs[col].map(lambda a: a[:-1])

    info = {
        "items": len(item_order), "genres": len(genre_order), "genders": len(gender_order),
        "occupations": len(occ_order), "users": len(seqs), "interactions": int(lengths.sum()),
        "min_len_train": int(lengths.min() - 1), "max_len": int(lengths.max()),
    }
    return train, seqs, info


ARROW_SCHEMA = pa.schema([
    ("item_id-list", pa.list_(pa.int64())),
    ("genre-list", pa.list_(pa.int64())),
    ("rating-list", pa.list_(pa.float32())),
    ("user_age", pa.float32()),
    ("user_gender", pa.int64()),
    ("user_occupation", pa.int64()),
])


def write_parquet(df: pd.DataFrame, path: str) -> None:
    table = pa.Table.from_pydict({name: df[name].tolist() for name in ARROW_SCHEMA.names}, schema=ARROW_SCHEMA)
    pq.write_table(table, path)


def _feature(name: str, *, kind: str, tags: list[str], max_value: int | None = None,
             value_count: tuple[int, int] | None = None) -> str:
    lines = ["feature {", f'  name: "{name}"']
    if value_count is not None:
        lines += ["  value_count {", f"    min: {value_count[0]}", f"    max: {value_count[1]}", "  }"]
    if kind == "int":
        lines += ["  type: INT", "  int_domain {", f'    name: "{name}"', "    min: 0",
                  f"    max: {max_value}", "    is_categorical: true", "  }"]
    else:
        lines += ["  type: FLOAT", "  float_domain {", f'    name: "{name}"', "    min: 0.0",
                  "    max: 1.0", "  }"]
    lines += ["  annotation {"] + [f'    tag: "{t}"' for t in tags] + ["  }", "}"]
    return "\n".join(lines)


def schema_text(info: dict) -> str:
    vc = (info["min_len_train"], info["max_len"])
    parts = [
        "# MovieLens 100K user histories written by examples/ml100k/prepare.py (Transformers4Rec tags).",
        "# Categorical ids are 1..n by frequency; 0 is padding, so int_domain.max = cardinality - 1.",
        _feature("item_id-list", kind="int", max_value=info["items"], value_count=vc,
                 tags=["item_id", "item", "categorical", "list"]),
        _feature("genre-list", kind="int", max_value=info["genres"], value_count=vc,
                 tags=["item", "categorical", "list"]),
        _feature("rating-list", kind="float", value_count=vc, tags=["item", "continuous", "list"]),
        _feature("user_age", kind="float", tags=["user", "context", "continuous"]),
        _feature("user_gender", kind="int", max_value=info["genders"], tags=["user", "context", "categorical"]),
        _feature("user_occupation", kind="int", max_value=info["occupations"],
                 tags=["user", "context", "categorical"]),
    ]
    return "\n".join(parts) + "\n"


def find_src(src: str | None) -> str:
    candidates = [src] if src else DEFAULT_SRC_CANDIDATES
    for cand in candidates:
        if cand and os.path.isfile(os.path.join(cand, "ml-100k.inter")):
            return os.path.abspath(cand)
    where = src or " or ".join(os.path.abspath(c) for c in DEFAULT_SRC_CANDIDATES)
    raise SystemExit(f"ml-100k.inter not found in {where}; pass --src DIR (the folder with ml-100k.inter, "
                     ".item and .user)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=None, help="folder with ml-100k.inter/.item/.user "
                        "(default: ../shared/data/ml-100k beside the repository)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    src = find_src(args.src)
    train, valid, info = build(src)
    os.makedirs(args.out, exist_ok=True)
    write_parquet(train, os.path.join(args.out, "train.parquet"))
    write_parquet(valid, os.path.join(args.out, "valid.parquet"))
    with open(os.path.join(args.out, "schema.pbtxt"), "w", encoding="utf-8") as f:
        f.write(schema_text(info))
    print(f"ml-100k from {src}: {info['users']} users, {info['items']} items, {info['interactions']} "
          f"interactions, {info['genres']} genres; sequence lengths {info['min_len_train'] + 1}..{info['max_len']}")
    print(f"wrote {args.out}/train.parquet, valid.parquet, schema.pbtxt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
