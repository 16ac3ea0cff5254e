"""Parquet -> padded batches: shapes, truncation (keep the most recent), shuffling, and every bad-data message."""
import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
torch = pytest.importorskip("torch")

from specc.data import open_dataset
from specc.data_chunks import arrow_column  # noqa: E402
from specc.errors import DataError, UserError  # noqa: E402
from specc.schema import Schema  # noqa: E402


SCHEMA = Schema.from_columns([
    {"name": "item", "tags": ["item", "id", "categorical", "list"], "is_list": True, "cardinality": 50},
    {"name": "cat", "tags": ["item", "categorical", "list"], "is_list": True, "cardinality": 5},
    {"name": "price", "tags": ["continuous", "list"], "dtype": "float", "is_list": True},
    {"name": "weekday", "tags": ["context", "categorical"], "cardinality": 8},
    {"name": "age", "tags": ["continuous"], "dtype": "float"},
    {"name": "click", "tags": ["binary_classification", "target"]},
])
COLS = ["item", "cat", "price", "weekday", "age", "click"]


def _write(path, items, *, cat=None, price=None, weekday=None, age=None, click=None, **extra):
    n = len(items)
    cat = cat if cat is not None else [[i % 5 for i in row] for row in items]
    price = price if price is not None else [[i / 100.0 for i in row] for row in items]
    table = {
        "item": pa.array(items, pa.list_(pa.int64())),
        "cat": pa.array(cat, pa.list_(pa.int32())),
        "price": pa.array(price, pa.list_(pa.float32())),
        "weekday": weekday if isinstance(weekday, pa.Array) else
        pa.array(weekday if weekday is not None else [r % 7 for r in range(n)], pa.int64()),
        "age": pa.array(age if age is not None else [r / n for r in range(n)], pa.float64()),
        "click": click if isinstance(click, pa.Array) else
        pa.array(click if click is not None else [r % 2 for r in range(n)], pa.int8()),
    }
    for k, v in extra.items():
        table[k] = v if isinstance(v, pa.Array) else pa.array(v)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), path)
    return path


def _all(ds, bs=1000, **kw):
    """Every batch, list columns padded on to max_length (a batch is padded to its longest row), concatenated."""
    out = {}
    for b in ds.batches(bs, shuffle=kw.pop("shuffle", False), **kw):
        for k, v in b.items():
            out.setdefault(k, []).append(v if v.dim() == 1 else
                                         torch.nn.functional.pad(v, (0, ds.max_length - v.shape[1])))
    return {k: torch.cat(v) for k, v in out.items()}


def _problems(exc_info) -> str:
    return "\n".join(exc_info.value.problems)


# --- shapes, padding, truncation -------------------------------------------------------------------


def test_padding_and_truncation_keep_most_recent(tmp_path):
    items = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10]]
    f = _write(tmp_path / "d.parquet", items)
    ds = open_dataset(f, SCHEMA, COLS, item_column="item", max_length=4)
    assert ds.n_rows == 3 and ds.n_skipped == 0
    b = next(ds.batches(8, shuffle=False))
    assert b["item"].tolist() == [[1, 2, 3, 0], [4, 0, 0, 0], [7, 8, 9, 10]]
    assert b["cat"].tolist() == [[1, 2, 3, 0], [4, 0, 0, 0], [2, 3, 4, 0]]
    assert b["item"].dtype == torch.int64 and b["cat"].dtype == torch.int64
    assert b["price"].dtype == torch.float32 and b["price"].shape == (3, 4)
    assert torch.allclose(b["price"][2], torch.tensor([0.07, 0.08, 0.09, 0.10]))
    assert b["weekday"].shape == (3,) and b["weekday"].dtype == torch.int64
    assert b["age"].shape == (3,) and b["age"].dtype == torch.float32
    assert b["click"].dtype == torch.int64


def test_ragged_matches_python(tmp_path):
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(1, 50, rng.integers(1, 30))) for _ in range(333)]
    # spread over two files in a folder, read by folder
    _write(tmp_path / "data" / "part_0.parquet", rows[:200])
    _write(tmp_path / "data" / "part_1.parquet", rows[200:], weekday=[1] * 133, age=[0.5] * 133, click=[0] * 133)
    L = 12
    ds = open_dataset(tmp_path / "data", SCHEMA, ["item", "price"], item_column="item", max_length=L)
    got = _all(ds, bs=64)
    want = [r[-L:] + [0] * (L - len(r[-L:])) for r in rows]
    assert got["item"].tolist() == want
    want_p = np.array([[v / 100.0 for v in r[-L:]] + [0.0] * (L - len(r[-L:])) for r in rows], np.float32)
    assert np.allclose(got["price"].numpy(), want_p)


def test_shuffle_deterministic(tmp_path):
    rows = [[i % 49 + 1, (i * 7) % 49 + 1] for i in range(200)]
    f = _write(tmp_path / "d.parquet", rows, age=[float(i) for i in range(200)])
    ds = open_dataset(f, SCHEMA, ["item", "age"], item_column="item", max_length=2)

    def order(**kw):
        return torch.cat([b["age"] for b in ds.batches(32, shuffle=True, **kw)]).long().tolist()

    assert order(seed=1, epoch=0) == order(seed=1, epoch=0)
    assert order(seed=1, epoch=0) != order(seed=1, epoch=1)
    assert order(seed=1, epoch=0) != order(seed=2, epoch=0)
    assert sorted(order(seed=5, epoch=3)) == list(range(200))           # a permutation
    plain = torch.cat([b["age"] for b in ds.batches(32, shuffle=False)]).long().tolist()
    assert plain == list(range(200))


def test_len_and_drop_last(tmp_path):
    f = _write(tmp_path / "d.parquet", [[1]] * 10)
    ds = open_dataset(f, SCHEMA, ["item"], item_column="item", max_length=3)
    assert len(ds) == 10
    assert [b["item"].shape[0] for b in ds.batches(4, shuffle=False)] == [4, 4, 2]
    assert len(ds) == 3
    assert [b["item"].shape[0] for b in ds.batches(4, shuffle=True, drop_last=True)] == [4, 4]
    assert len(ds) == 2


def test_item_counts(tmp_path):
    f = _write(tmp_path / "d.parquet", [[1, 2, 2], [3, 2], [], [1]])
    ds = open_dataset(f, SCHEMA, ["item"], item_column="item", max_length=2)
    counts = ds.item_counts(50)
    assert counts.dtype == torch.float32 and counts.shape == (50,)
    assert counts[:5].tolist() == [0.0, 2.0, 3.0, 1.0, 0.0]      # before truncation; the empty row is skipped


# --- skipping -----------------------------------------------------------------------------------------


def test_empty_and_short_sequences_skipped(tmp_path):
    items = [[1, 2], [], [3], [4, 5, 6], []]
    f = _write(tmp_path / "d.parquet", items)
    ds = open_dataset(f, SCHEMA, COLS, item_column="item", max_length=3)
    assert (ds.n_rows, ds.n_skipped) == (3, 2)
    assert _all(ds)["item"].tolist() == [[1, 2, 0], [3, 0, 0], [4, 5, 6]]
    assert _all(ds)["weekday"].tolist() == [0, 2, 3]               # scalars follow their rows
    ev = open_dataset(f, SCHEMA, COLS, item_column="item", max_length=3, min_length=2)
    assert (ev.n_rows, ev.n_skipped) == (2, 3)
    assert _all(ev)["item"].tolist() == [[1, 2, 0], [4, 5, 6]]


def test_source_rows_name_the_input_rows_kept(tmp_path):
    _write(tmp_path / "data" / "a.parquet", [[1, 2], [], [3]])
    _write(tmp_path / "data" / "b.parquet", [[4], [5, 6, 7], [], [8, 9]])
    ds = open_dataset(tmp_path / "data", SCHEMA, ["item"], item_column="item", max_length=3)
    assert (ds.n_rows, ds.n_skipped, ds.n_total) == (5, 2, 7)
    rows = ds.source_rows()
    assert rows.dtype == np.int64 and rows.tolist() == [0, 2, 3, 4, 6]     # across files, skipped rows counted
    assert _all(ds)["item"][:, 0].tolist() == [1, 3, 4, 5, 8]                # in the order batches yield them
    ev = open_dataset(tmp_path / "data", SCHEMA, ["item"], item_column="item", max_length=3, min_length=2)
    assert ev.source_rows().tolist() == [0, 4, 6] and ev.n_total == 7


def test_trailing_zeros_are_padding(tmp_path):
    """Pre-padded rows: trailing 0s are stripped before truncation, the other list columns follow the items."""
    items = [[1, 2, 3, 4, 0, 0], [0, 0, 0], [5, 0], [6, 7]]
    f = _write(tmp_path / "d.parquet", items, cat=[[1, 2, 3, 4, 0, 0], [0, 0, 0], [1, 0], [2, 3]],
               price=[[0.1, 0.2, 0.3, 0.4, 0.0, 0.0], [0.0] * 3, [0.5, 0.0], [0.6, 0.7]])
    ds = open_dataset(f, SCHEMA, COLS, item_column="item", max_length=3)
    assert (ds.n_rows, ds.n_skipped) == (3, 1) and ds.source_rows().tolist() == [0, 2, 3]
    got = _all(ds)
    assert got["item"].tolist() == [[2, 3, 4], [5, 0, 0], [6, 7, 0]]
    assert got["cat"].tolist() == [[2, 3, 4], [1, 0, 0], [2, 3, 0]]
    assert np.allclose(got["price"].numpy(), [[0.2, 0.3, 0.4], [0.5, 0, 0], [0.6, 0.7, 0]])
    ev = open_dataset(f, SCHEMA, COLS, item_column="item", max_length=3, min_length=2)
    assert ev.source_rows().tolist() == [0, 3]                  # [5, 0] holds one item, not two
    # side lists that hold only the real interactions of a padded item list are fine too; other lengths are not
    g = _write(tmp_path / "g.parquet", [[1, 2, 0, 0], [3, 4]], cat=[[1, 2], [3]], price=[[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(DataError, match="1 row\\(s\\) whose list columns differ in length"):
        open_dataset(g, SCHEMA, COLS, item_column="item", max_length=3)
    h = _write(tmp_path / "h.parquet", [[1, 2, 0, 0], [3, 4]], cat=[[1, 2], [3, 4]], price=[[0.1, 0.2], [0.3, 0.4]])
    assert _all(open_dataset(h, SCHEMA, COLS, item_column="item", max_length=3))["cat"].tolist() == \
        [[1, 2, 0], [3, 4, 0]]


def test_fixed_size_list_columns(tmp_path):
    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"item": pa.array([[1, 2, 0], [3, 4, 5], [0, 0, 0]], pa.list_(pa.int64(), 3))}), f)
    ds = open_dataset(f, SCHEMA, ["item"], item_column="item", max_length=2)
    assert ds.source_rows().tolist() == [0, 1]
    assert _all(ds)["item"].tolist() == [[1, 2], [4, 5]]


def test_arrow_chunks_that_are_slices():
    """pyarrow may hand over a slice of a bigger buffer: values, offsets and null rows are those of the slice."""
    for arr in (pa.array([[9, 9], [1], [2, None], [3, 4]], pa.list_(pa.int64())).slice(2),
                pa.array([[9, 9], [None, 2], [3, 4]], pa.list_(pa.int64(), 2)).slice(1)):
        values, off, null_rows = arrow_column(arr, fill=7)
        assert values.tolist() in ([2, 7, 3, 4], [7, 2, 3, 4])      # a null is read as the fill value
        assert off.tolist() == [0, 2, 4] and null_rows.tolist() == [0]
    values, off, null_rows = arrow_column(pa.array([1.0, None, 2.0, None]).slice(1))
    assert off is None and values.tolist() == [0.0, 2.0, 0.0] and null_rows.tolist() == [0, 2]


def test_zero_before_an_item_is_rejected(tmp_path, monkeypatch):
    _write(tmp_path / "a.parquet", [[1, 2], [0, 3]])
    _write(tmp_path / "b.parquet", [[4, 5], [6, 0, 7, 0], [8, 0]])     # [8, 0] is padded, not wrong
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        open_dataset("*.parquet", SCHEMA, ["item"], item_column="item", max_length=3)
    assert e.value.problems == [
        ("column 'item': id 0 (padding) inside 2 sequence(s) (first: row 1 of 'a.parquet'); item ids start at 1 "
         "— shift 0-based ids by 1 or re-encode")]


def test_every_row_empty(tmp_path):
    f = _write(tmp_path / "d.parquet", [[], []])
    with pytest.raises(DataError) as e:
        open_dataset(f, SCHEMA, ["item"], item_column="item", max_length=3)
    assert "every row (2)" in _problems(e)
    f = _write(tmp_path / "e.parquet", [[1], [2]])
    with pytest.raises(DataError) as e:
        open_dataset(f, SCHEMA, ["item"], item_column="item", max_length=3, min_length=2)
    assert "fewer than 2 items" in _problems(e)


# --- bad data: every problem has its message -------------------------------------------------------------

def test_missing_path(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"")
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "trian.parquet", SCHEMA, ["item"], item_column="item", max_length=3)
    assert "does not exist" in _problems(e) and "train.parquet" in _problems(e)
    assert isinstance(e.value, UserError) and e.value.source.endswith("trian.parquet")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="no .parquet files"):
        open_dataset(tmp_path / "empty_dir", SCHEMA, ["item"], item_column="item", max_length=3)
    with pytest.raises(DataError, match="no file matches"):
        open_dataset(str(tmp_path / "*.pq"), SCHEMA, ["item"], item_column="item", max_length=3)


def test_no_columns(tmp_path):
    f = _write(tmp_path / "d.parquet", [[1]])
    with pytest.raises(ValueError, match="at least one column"):
        open_dataset(f, SCHEMA, [], item_column=None, max_length=3)


def test_not_parquet(tmp_path):
    f = tmp_path / "data.parquet"
    f.write_text("session_id,item\n1,2\n")
    with pytest.raises(DataError) as e:
        open_dataset(f, SCHEMA, ["item"], item_column="item", max_length=3)
    assert "is not a parquet file" in _problems(e)


def test_missing_columns_all_reported(tmp_path):
    f = _write(tmp_path / "d.parquet", [[1]])
    with pytest.raises(DataError) as e:
        open_dataset(f, SCHEMA, ["itme", "wekday", "item"], item_column="item", max_length=3)
    text = _problems(e)
    assert len(e.value.problems) == 2
    assert "'itme' is not in the data" in text and "'item'" in text
    assert "'wekday' is not in the data" in text and "did you mean 'weekday'" in text


def test_wrong_types(tmp_path):
    f = _write(tmp_path / "d.parquet", [[1, 2]],
               weekday=pa.array([1.5], pa.float64()),                       # float where categorical
               cat=[[1, 2]])
    # scalar where list, list where scalar: rename via extra columns and a schema that expects otherwise
    schema = Schema.from_columns(list(SCHEMA.columns) + [
        {"name": "seq_expected", "tags": ["categorical", "list"], "is_list": True, "cardinality": 9},
        {"name": "scalar_expected", "tags": ["continuous"], "dtype": "float"},
        {"name": "text", "tags": ["categorical"], "cardinality": 3},
    ])
    pq.write_table(pq.read_table(f).append_column("seq_expected", pa.array([3]))
                   .append_column("scalar_expected", pa.array([[0.5]]))
                   .append_column("text", pa.array(["a"])), f)
    with pytest.raises(DataError) as e:
        open_dataset(f, schema, ["item", "weekday", "seq_expected", "scalar_expected", "text"],
                     item_column="item", max_length=3)
    text = _problems(e)
    assert len(e.value.problems) == 4
    assert "'weekday' holds floats" in text and "categorical" in text
    assert "'seq_expected' is a scalar in the data but a list" in text
    assert "'scalar_expected' is a list in the data but a scalar" in text
    assert "'text' holds string" in text


def test_ids_out_of_range(tmp_path):
    f = _write(tmp_path / "d.parquet", [[1, 50, 51], [-1, 3]], cat=[[0, 1, 2], [1, 9]], weekday=[3, 8])
    with pytest.raises(DataError) as e:
        open_dataset(f, SCHEMA, ["item", "cat", "weekday"], item_column="item", max_length=3)
    text = _problems(e)
    assert len(e.value.problems) == 3
    assert "column 'item': 3 value(s) outside [0, 50) (min seen -1, max seen 51; first in row 0 of 'd.parquet')" in text
    assert "column 'cat': 1 value(s) outside [0, 5) (min seen 0, max seen 9; first in row 1 of 'd.parquet')" in text
    assert "column 'weekday': 1 value(s) outside [0, 8) (min seen 3, max seen 8; first in row 1" in text


def test_non_finite(tmp_path, monkeypatch):
    _write(tmp_path / "d.parquet", [[1, 2], [3], [4]], price=[[0.1, float("nan")], [0.3], [float("inf")]],
           age=[0.1, float("-inf"), 0.2])
    monkeypatch.chdir(tmp_path)                                 # a relative path names its file too
    with pytest.raises(DataError) as e:
        open_dataset("d.parquet", SCHEMA, ["item", "price", "age"], item_column="item", max_length=3)
    text = _problems(e)
    assert "column 'price': 2 NaN/inf value(s) (first in row 0 of 'd.parquet')" in text
    assert "column 'age': 1 NaN/inf value(s) (first in row 1 of 'd.parquet')" in text


def test_list_columns_differ_in_length(tmp_path):
    f = _write(tmp_path / "d.parquet", [[1, 2], [3, 4, 5], [6]], cat=[[1, 2], [3, 4], [1, 1]])
    with pytest.raises(DataError) as e:
        open_dataset(f, SCHEMA, ["item", "cat"], item_column="item", max_length=3)
    text = _problems(e)
    assert "2 row(s) whose list columns differ in length (first: row 1 of 'd.parquet': 'item' has 3, 'cat' has 2)" \
        in text


def test_nulls_reported(tmp_path):
    """A null scalar, a null inside a list and a null list are each one null value."""
    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"item": pa.array([[1, None], [2], [3, 4], [5]], pa.list_(pa.int64())),
                             "cat": pa.array([[1, 2], [2], None, None], pa.list_(pa.int64())),
                             "price": pa.array([[0.1, 0.2], [None], [0.3, 0.4], [0.5]], pa.list_(pa.float32())),
                             "age": pa.array([0.5, 0.1, None, 0.2], pa.float64()),
                             "weekday": pa.array([1, 2, 3, None], pa.int64())}), f)
    with pytest.raises(DataError) as e:
        open_dataset(f, SCHEMA, ["item", "cat", "price", "age", "weekday"], item_column="item", max_length=3)
    assert e.value.problems == [
        "column 'item': 1 null value(s) (first in row 0 of 'd.parquet'); fill or drop them",
        "column 'cat': 2 null value(s) (first in row 2 of 'd.parquet'); fill or drop them",
        "column 'price': 1 null value(s) (first in row 1 of 'd.parquet'); fill or drop them",
        "column 'age': 1 null value(s) (first in row 2 of 'd.parquet'); fill or drop them",
        "column 'weekday': 1 null value(s) (first in row 3 of 'd.parquet'); fill or drop them"]
    # rows count on across files
    _write(tmp_path / "data" / "a.parquet", [[1], [2]])
    b = pa.table({"item": pa.array([[3], [4, None]], pa.list_(pa.int64()))})
    pq.write_table(b, tmp_path / "data" / "b.parquet")
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "data", SCHEMA, ["item"], item_column="item", max_length=3)
    assert e.value.problems == ["column 'item': 1 null value(s) (first in row 1 of 'b.parquet'); fill or drop them"]


def test_duplicate_column_names(tmp_path):
    f = _write(tmp_path / "d.parquet", [[1, 2], [3]])
    table = pq.read_table(f)
    pq.write_table(table.append_column("weekday", pa.array([5, 6])), f)
    with pytest.raises(DataError) as e:
        open_dataset(f, SCHEMA, ["item", "weekday"], item_column="item", max_length=3)
    assert e.value.problems == [f"{str(f)!r} has 2 columns named 'weekday'; rename or drop all but one"]
    assert open_dataset(f, SCHEMA, ["item"], item_column="item", max_length=3).n_rows == 2


def test_message_renders_source(tmp_path):
    f = _write(tmp_path / "d.parquet", [[1, 99]])
    with pytest.raises(DataError) as e:
        open_dataset(f, SCHEMA, ["item"], item_column="item", max_length=3)
    assert str(e.value).startswith(str(f)) and "1 data problem" in str(e.value)


def test_values_outside_a_non_categorical_domain(tmp_path):
    """0/1 targets must hold exactly 0 or 1, and an int column with an int_domain must stay inside it."""
    schema = Schema.from_columns(list(SCHEMA.columns) + [
        {"name": "stars", "tags": ["regression", "target"], "int_range": [1, 5]},
        {"name": "label", "tags": ["binary_classification", "target"], "dtype": "float"},
        {"name": "bought", "tags": ["binary_classification", "categorical"], "cardinality": 2}])
    f = _write(tmp_path / "d.parquet", [[1, 2], [3], [4], [5]], click=pa.array([0, 0.5, 2, 1], pa.float32()),
               stars=pa.array([1, 5, 9, 3]), label=pa.array([1.0, float("nan"), 0.0, 1.0]), bought=[0, 1, 2, 1])
    with pytest.raises(DataError) as e:
        open_dataset(f, schema, ["item", "click", "stars", "label", "bought"], item_column="item", max_length=3)
    text = _problems(e)
    # each bad value is reported once: the NaN label is not also "not 0 or 1", nor the id 2 of 'bought'
    assert len(e.value.problems) == 4
    assert "column 'bought': 1 value(s) outside [0, 2) (min seen 0, max seen 2; first in row 2 of 'd.parquet')" in text
    assert "column 'click': 2 value(s) that are not 0 or 1 (e.g. 0.5, 2; first in row 1 of 'd.parquet')" in text
    assert "column 'stars': 1 value(s) outside int_domain [1, 5] (e.g. 9; first in row 2 of 'd.parquet')" in text
    assert "column 'label': 1 NaN/inf value(s) (first in row 1 of 'd.parquet')" in text


def _with_column(path, name, array):
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index(name), name, array), path)
    return path


def test_every_file_of_a_folder_must_store_a_column_alike(tmp_path):
    _write(tmp_path / "d" / "part0.parquet", [[1, 2], [3, 4, 5]])
    part1 = _write(tmp_path / "d" / "part1.parquet", [[1, 2]])
    _with_column(part1, "item", pa.array([[1.7, 2.0]], pa.list_(pa.float64())))
    _with_column(part1, "weekday", pa.array([[1]], pa.list_(pa.int64())))
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "d", SCHEMA, ["item", "weekday"], item_column="item", max_length=3)
    text = _problems(e)
    assert "part1.parquet' stores column 'item' as list<element: double>" in text
    assert "part1.parquet' stores column 'weekday' as list<element: int64>" in text
    _write(tmp_path / "ok" / "part0.parquet", [[1, 2]])
    _with_column(_write(tmp_path / "ok" / "part1.parquet", [[3, 4]]), "item", pa.array([[3, 4]], pa.list_(pa.int32())))
    assert len(open_dataset(tmp_path / "ok", SCHEMA, ["item"], item_column="item", max_length=3)) == 2   # int32/64


def test_booleans_are_not_categorical_ids(tmp_path):
    f = _with_column(_write(tmp_path / "d.parquet", [[1, 2]]), "cat", pa.array([[True, False]], pa.list_(pa.bool_())))
    with pytest.raises(DataError, match="'cat' holds booleans"):
        open_dataset(f, SCHEMA, ["item", "cat"], item_column="item", max_length=3)


# --- streaming: shards, epoch order, shuffle buffer, padding ----------------------------------------------

def _numbered(path, first, n, row_group_size):
    """Sessions whose 'age' is their row number over all files (from `first`); every fifth one is empty."""
    rows = range(first, first + n)
    items = [[1 + i % 9] * (1 + i % 4) if i % 5 else [] for i in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"item": pa.array(items, pa.list_(pa.int64())), "age": pa.array([float(i) for i in rows])}),
                   path, row_group_size=row_group_size)
    return [i for i in rows if i % 5]


def _rank_rows(path, world_size, **kw):
    out = []
    for rank in range(world_size):
        ds = open_dataset(path, SCHEMA, ["item", "age"], item_column="item", max_length=3, rank=rank,
                          world_size=world_size, shuffle_buffer=kw.pop("shuffle_buffer", 8))
        batches = list(ds.batches(4, shuffle=kw.get("shuffle", True), seed=kw.get("seed", 3),
                                  epoch=kw.get("epoch", 0)))
        assert len(batches) == ds.steps(4) == len(ds) and min(b["item"].shape[0] for b in batches) >= 1
        out.append([int(r) for b in batches for r in b["age"].tolist()])
    return out


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_are_disjoint_and_cover_every_row_once_per_epoch(tmp_path, world_size):
    usable = _numbered(tmp_path / "d" / "a.parquet", 0, 40, row_group_size=7)
    usable += _numbered(tmp_path / "d" / "b.parquet", 40, 11, row_group_size=100)      # one row group
    assert pq.ParquetFile(tmp_path / "d" / "b.parquet").num_row_groups == 1
    for shuffle in (False, True):
        for epoch in (0, 1):
            shares = _rank_rows(tmp_path / "d", world_size, shuffle=shuffle, epoch=epoch)
            assert sorted(r for share in shares for r in share) == usable
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_single_row_group_splits_across_processes(tmp_path):
    usable = _numbered(tmp_path / "d.parquet", 0, 30, row_group_size=1000)
    first, second = _rank_rows(tmp_path / "d.parquet", 2, shuffle=False)
    assert first == usable[:12] and second == usable[12:]


def test_equal_steps_when_a_share_is_one_row_short(tmp_path):
    """7 rows on 2 processes, 3 per batch: 4 rows take 2 batches, so 3 rows take 2 as well (2 + 1), never 0."""
    f = _write(tmp_path / "d.parquet", [[1]] * 7)
    sizes = []
    for rank in (0, 1):
        ds = open_dataset(f, SCHEMA, ["item"], item_column="item", max_length=3, rank=rank, world_size=2)
        sizes.append([b["item"].shape[0] for b in ds.batches(3, shuffle=False)])
    assert sizes == [[3, 1], [2, 1]]
    with pytest.raises(DataError, match="cannot be shared by 8 processes"):
        open_dataset(f, SCHEMA, ["item"], item_column="item", max_length=3, rank=0, world_size=8)


def test_the_global_order_does_not_depend_on_the_world_size(tmp_path):
    from specc.data_shards import epoch_order
    _numbered(tmp_path / "d.parquet", 0, 60, row_group_size=6)
    one = _rank_rows(tmp_path / "d.parquet", 1, shuffle=False)[0]
    assert sum(_rank_rows(tmp_path / "d.parquet", 3, shuffle=False), []) == one
    # shuffled: each process holds its contiguous share of the one epoch order of the row groups (before the buffer)
    ds = open_dataset(tmp_path / "d.parquet", SCHEMA, ["item", "age"], item_column="item", max_length=3)
    order = [int(r) for rows in ds._stream(epoch_order(10, True, 3, 1)) for r in rows.values["age"]]
    shares = _rank_rows(tmp_path / "d.parquet", 2, epoch=1)
    assert sorted(shares[0]) == sorted(order[:len(shares[0])]) and sorted(shares[1]) == sorted(order[len(shares[0]):])


def test_the_epoch_order_is_drawn_from_the_seed_and_epoch(tmp_path):
    _numbered(tmp_path / "d.parquet", 0, 200, row_group_size=16)
    run = _rank_rows(tmp_path / "d.parquet", 2, seed=1, epoch=0)
    assert _rank_rows(tmp_path / "d.parquet", 2, seed=1, epoch=0) == run
    assert _rank_rows(tmp_path / "d.parquet", 2, seed=1, epoch=1) != run
    assert _rank_rows(tmp_path / "d.parquet", 2, seed=2, epoch=0) != run
    plain = _rank_rows(tmp_path / "d.parquet", 1, shuffle=False)[0]
    shuffled = _rank_rows(tmp_path / "d.parquet", 1, shuffle_buffer=64)[0]
    assert shuffled != plain and sorted(shuffled) == plain
    # the buffer moves rows beyond their row group: some batch mixes rows of different groups
    assert any(len({r // 16 for r in shuffled[i:i + 4]}) > 1 for i in range(0, len(shuffled), 4))


def test_batches_are_padded_to_their_longest_row(tmp_path):
    f = _write(tmp_path / "d.parquet", [[1], [2, 3], [4], [5, 6, 7, 8, 9, 10], [11]])
    ds = open_dataset(f, SCHEMA, ["item", "price"], item_column="item", max_length=4)
    widths = [(b["item"].shape[1], b["price"].shape[1]) for b in ds.batches(2, shuffle=False)]
    assert widths == [(2, 2), (4, 4), (1, 1)]                 # the 6-item row keeps its last 4


def test_every_kind_of_problem_is_reported_at_once(tmp_path):
    """A string column, nulls, out-of-range ids and NaN in one file: one error lists them all, each located."""
    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"item": pa.array([[1, 2], [3, 99], [4]], pa.list_(pa.int64())),
                             "cat": pa.array([[1, 2], None, [3]], pa.list_(pa.int64())),
                             "price": pa.array([[0.1, 0.2], [0.3, 0.4], [float("nan")]], pa.list_(pa.float32())),
                             "weekday": pa.array(["mon", "tue", "wed"])}), f)
    with pytest.raises(DataError) as e:
        open_dataset(f, SCHEMA, ["item", "cat", "price", "weekday"], item_column="item", max_length=3)
    assert e.value.problems == [
        "column 'weekday' holds string, which specc cannot feed to a model: encode it as integer ids (e.g. "
        "NVTabular Categorify) or floats",
        "column 'cat': 1 null value(s) (first in row 1 of 'd.parquet'); fill or drop them",
        "column 'item': 1 value(s) outside [0, 50) (min seen 1, max seen 99; first in row 1 of 'd.parquet'); ids "
        "must be < the schema's cardinality (int_domain.max + 1 = 50): fix the schema's int_domain.max or "
        "re-encode the ids (data prepared after a run, with its catalog grown by --categories, need a model that "
        "knows the new ids: train one with --init-from the run)",
        "column 'price': 1 NaN/inf value(s) (first in row 2 of 'd.parquet'); fill or drop them"]


@pytest.mark.parametrize("world_size", [2, 3])
def test_the_validation_pass_split_over_processes_finds_what_one_finds(tmp_path, world_size):
    """Each process validates a part of the row groups; merged, the findings are those of one pass over all."""
    from specc.data_check import Scan, groups_of, scan
    from specc.data_columns import plan_columns
    from specc.data_files import read_footers
    items = [[1 + i % 40, 2] for i in range(60)]
    items[5], items[33], items[47] = [1, 99], [0, 3], [77]                 # out of range (twice), 0 inside
    price = [[0.5, 0.5] for _ in range(60)]
    price[50], price[47] = [float("nan"), 1.0], [0.1, 0.2, 0.3]                 # NaN, lengths differ
    pq.write_table(pa.table({"item": pa.array(items, pa.list_(pa.int64())),
                             "price": pa.array(price, pa.list_(pa.float32())),
                             "age": pa.array([None if i in (20, 41) else 0.5 for i in range(60)], pa.float64())}),
                   tmp_path / "d.parquet", row_group_size=7)
    footers = read_footers([str(tmp_path / "d.parquet")], ["item", "price", "age"])
    plans = plan_columns(SCHEMA, ["item", "price", "age"], footers.arrow_schema, [])
    args = dict(item_column="item", length_column="item", min_length=2)
    whole = scan(footers, plans, **args)
    parts = [groups_of(footers.row_groups, r, world_size) for r in range(world_size)]
    assert sorted(g for part in parts for g in part) == list(range(len(footers.row_groups))) and all(parts)
    merged = Scan.merge([scan(footers, plans, groups=part, **args) for part in parts])
    assert merged.findings.problems(footers.where) == whole.findings.problems(footers.where)
    assert len(whole.findings.problems(footers.where)) == 5
    assert np.array_equal(merged.kept, whole.kept) and merged.n_total == whole.n_total == 60
    assert np.array_equal(merged.findings.item_counts, whole.findings.item_counts)
