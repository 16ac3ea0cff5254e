"""examples/ml100k/prepare.py on a tiny MovieLens-shaped data set: leave-last-out sequences and a loadable schema."""
import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq

import specc

ROOT = Path(__file__).resolve().parent.parent


def _prepare_module():
    spec = importlib.util.spec_from_file_location("ml100k_prepare", ROOT / "examples" / "ml100k" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_atomic_files(src: Path):
    src.mkdir()
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    # user 1 rates 10, 20, 30, 20 (time order differs from file order); user 2 rates 30, 10, 40
    for user, item, rating, ts in [(1, 20, 4, 200), (1, 10, 5, 100), (1, 30, 3, 300), (1, 20, 2, 400),
                                   (2, 30, 1, 50), (2, 10, 5, 60), (2, 40, 4, 70)]:
        inter.append(f"{user}\t{item}\t{rating}\t{ts}")
    (src / "ml-100k.inter").write_text("\n".join(inter) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
             "10\tA\t1995\tComedy Drama", "20\tB\t1995\tAction", "30\tC\t1996\tComedy", "40\tD\t1997\tDrama"]
    (src / "ml-100k.item").write_text("\n".join(items) + "\n")
    users = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
             "1\t24\tM\ttechnician\t85711", "2\t53\tF\tother\t94043"]
    (src / "ml-100k.user").write_text("\n".join(users) + "\n")


def test_prepare_writes_leave_last_out_sequences_and_a_schema(tmp_path):
    _write_atomic_files(tmp_path / "src")
    out = tmp_path / "out"
    assert _prepare_module().main(["--src", str(tmp_path / "src"), "--out", str(out)]) == 0
    train = pq.read_table(out / "train.parquet").to_pydict()
    valid = pq.read_table(out / "valid.parquet").to_pydict()
    for t, v in zip(train["item_id-list"], valid["item_id-list"]):
        assert t == v[:-1]
    lengths = sorted(len(v) for v in valid["item_id-list"])
    assert lengths == [3, 4]
    # most rated first: items 10, 20 and 30 have 2 ratings each, 40 has one -> id 4
    assert max(max(v) for v in valid["item_id-list"]) == 4
    schema = specc.load_schema(str(out / "schema.pbtxt"))
    assert schema["item_id-list"].cardinality == 5 and schema["item_id-list"].is_item_id
    spec = json.loads((ROOT / "examples" / "ml100k" / "xlnet_causal_side.json").read_text())
    spec.pop("schema")
    plan = specc.compile(spec, schema)
    assert plan.next_item.n_items == 5
