"""Synthetic Markov-chain sessions: files, schema, learnable structure, determinism."""
import json
import pathlib

import numpy as np
import pytest

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("merlin.schema")

from specc.data import open_dataset  # noqa: E402
from specc.errors import SpecError  # noqa: E402
from specc.schema import Schema, load_schema  # noqa: E402
from specc.synth import default_schema, synthesize  # noqa: E402

SCHEMAS = pathlib.Path(__file__).parent.parent / "specs" / "schemas"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return synthesize(None, out, n_train=2000, n_valid=400, seed=0)


def test_files_written_and_schema_loads(small):
    out = pathlib.Path(small.out_dir)
    assert {p.name for p in out.iterdir()} >= {"train.parquet", "valid.parquet", "schema.pbtxt", "optimum.json"}
    s = load_schema(small.schema_path)
    d = default_schema()
    assert [(c.name, c.tags, c.is_list, c.cardinality) for c in s] == \
        [(c.name, c.tags, c.is_list, c.cardinality) for c in d]
    train = pq.read_table(small.train_path)
    assert train.num_rows == 2000 and pq.read_table(small.valid_path).num_rows == 400
    assert train.column_names == s.names
    opt = json.loads(pathlib.Path(small.optimum_path).read_text())
    assert opt == json.loads(json.dumps(small.optimum))


def test_data_validates_and_loads(small):
    s = load_schema(small.schema_path)
    cols = [c.name for c in s if c.is_categorical or c.is_continuous or c.is_target]
    ds = open_dataset(small.train_path, s, cols, item_column=small.item_column, max_length=20)
    assert ds.n_rows == 2000 and ds.n_skipped == 0
    b = next(ds.batches(64, shuffle=True, seed=0))
    items = b[small.item_column]
    assert items.shape[0] == 64 and items.shape[1] <= 20 and int(items[:, 0].min()) >= 1 and int(items.max()) < 1000
    lengths = (items > 0).sum(1)
    assert int(lengths.min()) >= 2
    # side features follow the items: zero exactly where the item is padding
    assert ((b["category-list"] > 0) == (items > 0)).all()
    assert set(b["purchase"].unique().tolist()) <= {0, 1}
    ev = open_dataset(small.valid_path, s, cols, item_column=small.item_column, max_length=20, min_length=2)
    assert ev.n_rows == 400 and ev.n_skipped == 0


def test_markov_structure_beats_popularity(small):
    opt = small.optimum
    assert opt["n_sessions"] == 400
    assert opt["expected_recall@10"] > 0.8 and opt["recall@10"] > 0.8
    assert 0 < opt["ndcg@10"] <= opt["recall@10"] <= 1
    assert opt["popularity"]["recall@10"] < 0.35
    assert opt["recall@10"] > 2.5 * opt["popularity"]["recall@10"]


def test_empirical_transitions_are_predictive(small):
    """A first-order count model fit on train recovers much of the optimum on valid: the signal is in the data."""
    train = pq.read_table(small.train_path).column(small.item_column).to_pylist()
    valid = pq.read_table(small.valid_path).column(small.item_column).to_pylist()
    counts = np.zeros((1000, 1000))
    for row in train:
        np.add.at(counts, (row[:-1], row[1:]), 1)
    hits = sum(r[-1] in np.argsort(-counts[r[-2]])[:10] for r in valid)
    assert hits / len(valid) > 0.6


def test_side_features_carry_signal(small):
    t = pq.read_table(small.train_path).to_pydict()
    mapping = {}
    for items, cats in zip(t["item_id-list"], t["category-list"]):
        for i, c in zip(items, cats):
            assert mapping.setdefault(i, c) == c                     # a fixed item -> category map
    last_cat = np.array([mapping[r[-1]] for r in t["item_id-list"]])
    agree = np.mean((last_cat % 2) == np.array(t["purchase"]))
    assert agree > 0.8                                              # 10 % label noise


def test_deterministic_by_seed(tmp_path):
    a = synthesize(None, tmp_path / "a", n_train=300, n_valid=50, seed=7)
    b = synthesize(None, tmp_path / "b", n_train=300, n_valid=50, seed=7)
    c = synthesize(None, tmp_path / "c", n_train=300, n_valid=50, seed=8)
    ta, tb, tc = (pq.read_table(r.train_path) for r in (a, b, c))
    assert ta.equals(tb) and pq.read_table(a.valid_path).equals(pq.read_table(b.valid_path))
    assert not ta.equals(tc)
    assert a.optimum == b.optimum


@pytest.mark.parametrize("name", ["ecommerce", "retail", "movielens"])
def test_shipped_schemas_synthesize(tmp_path, name):
    s = load_schema(SCHEMAS / f"{name}.pbtxt")
    r = synthesize(s, tmp_path, n_train=200, n_valid=50, seed=1, max_length=8)
    back = load_schema(r.schema_path)
    assert [c.name for c in back] == s.names
    item = s.item_id_columns()[0]
    ds = open_dataset(r.train_path, back, s.names, item_column=item.name, max_length=8)
    lens = [len(x) for x in pq.read_table(r.train_path).column(item.name).to_pylist()]
    assert max(lens) <= 8 and min(lens) >= 2 and ds.n_rows == 200


def test_needs_an_item_sequence(tmp_path):
    s = Schema.from_columns([{"name": "x", "tags": ["continuous"], "dtype": "float"}])
    with pytest.raises(SpecError) as e:
        synthesize(s, tmp_path)
    assert e.value.issues[0].code == "item_id_missing"
    s = Schema.from_columns([{"name": "i", "tags": ["item", "id", "categorical", "list"], "is_list": True}])
    with pytest.raises(SpecError) as e:
        synthesize(s, tmp_path)
    assert e.value.issues[0].code == "no_cardinality"


def test_synthesised_columns_follow_their_schema(tmp_path):
    """List targets get a value per interaction; non-categorical ints stay inside their int_domain."""
    schema = Schema.from_columns([
        {"name": "items", "tags": ["item_id", "categorical", "list"], "is_list": True, "cardinality": 200},
        {"name": "stamps", "tags": ["list"], "is_list": True, "int_range": [1_396_321_200, 1_412_045_999]},
        {"name": "age", "tags": ["continuous"], "int_range": [18, 90]},
        {"name": "bought", "tags": ["binary_classification", "target", "list"], "is_list": True},
        {"name": "spend", "tags": ["regression", "target", "list"], "dtype": "float", "is_list": True},
    ])
    synthesize(schema, tmp_path, n_train=60, n_valid=10, seed=1)
    ds = open_dataset(tmp_path / "train.parquet", schema, ["items", "stamps", "age", "bought", "spend"],
                      item_column="items", max_length=20)
    batch = next(ds.batches(60, shuffle=False))
    real = batch["items"] != 0
    assert batch["bought"].shape == batch["items"].shape and set(batch["bought"][real].tolist()) <= {0, 1}
    assert batch["spend"].shape == batch["items"].shape
    stamps = batch["stamps"][real]
    assert stamps.min() >= 1_396_321_200 and stamps.max() <= 1_412_045_999
    assert batch["age"].min() >= 18 and batch["age"].max() <= 90
