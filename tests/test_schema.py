"""Reading Merlin schemas (pbtxt and JSON, both tag conventions) into the specc view, and writing them back."""
import json
import os
import pathlib

import pytest

from specc.errors import SpecError
from specc.schema import Column, Schema, load_schema, save_schema

pytest.importorskip("merlin.schema")

HERE = pathlib.Path(__file__).parent
DATA = HERE / "data"
SCHEMAS = HERE.parent / "specs" / "schemas"


def _code(exc_info) -> str:
    issues = exc_info.value.issues
    assert len(issues) == 1 and issues[0].path == "$.schema"
    return issues[0].code


# --- Transformers4Rec convention: the item id column is tagged `item_id` -----------------------

@pytest.mark.parametrize("name", ["t4r_session.json", "t4r_session.pbtxt"])
def test_t4rec_convention(name):
    s = load_schema(DATA / name)
    assert s.source == str(DATA / name)
    items = s.item_id_columns()
    assert len(items) == 1
    item = items[0]
    assert item.name in ("item_id/list", "item_id-list")
    assert item.is_list and item.is_categorical and item.dtype == "int"
    assert item.cardinality == 5000                   # int_domain.max + 1
    assert item.value_count == (2, 50)
    cat = s["category/list" if name.endswith("json") else "category-list"]
    assert cat.is_list and cat.cardinality == 100 and not cat.is_item_id


def test_t4rec_json_targets_without_type():
    s = load_schema(DATA / "t4r_session.json")
    assert s["click"].is_target and s["click"].dtype == "int"
    assert s["play_percentage"].is_target and s["play_percentage"].dtype == "float"
    assert s["user_country"].cardinality == 63 and not s["user_country"].is_list
    assert s["user_age"].is_continuous and s["user_age"].dtype == "float" and s["user_age"].cardinality is None
    assert s["session_id"].tags == {"session", "id"}        # compound tags atomised as merlin does
    assert s.item_id_columns()[0].tags >= {"item", "id"}
    assert not s["session_id"].is_item_id


def test_t4rec_pbtxt_misc_columns():
    s = load_schema(DATA / "t4r_session.pbtxt")
    assert s["payment_type"].dtype == "string"
    assert s["day_index"].cardinality is None                 # an int domain without `categorical`
    assert s["age_days-list"].dtype == "float" and s["age_days-list"].is_list


# --- merlin-core convention: item + id tags, written by merlin's own writer ----------------------

@pytest.mark.parametrize("name", ["merlin_core.pbtxt", "merlin_core.json"])
def test_merlin_core_convention(name):
    s = load_schema(DATA / name)
    assert [c.name for c in s.item_id_columns()] == ["item_id-list"]
    item = s["item_id-list"]
    assert {"item", "id", "categorical"} <= item.tags
    assert item.is_list                                       # by merlin's is_list / is_ragged
    assert item.cardinality == 500
    cat = s["category-list"]
    assert "list" in cat.tags and cat.is_list                 # by value_count alone (no list tag in the file)
    assert cat.value_count == (2, 30)
    assert s["price-list"].is_list and s["price-list"].is_continuous
    assert s["country"].cardinality == 62 and not s["country"].is_list
    assert s["click"].is_target and s["click"].dtype == "int"


def test_list_detection_by_tag_only(tmp_path):
    (tmp_path / "schema.pbtxt").write_text(
        'feature { name: "a" type: INT int_domain { max: 9 is_categorical: true } annotation { tag: "list" } }\n'
        'feature { name: "b" type: INT int_domain { max: 9 } annotation { tag: "categorical" } }\n')
    s = load_schema(tmp_path)                                 # a folder holding schema.pbtxt
    assert s["a"].is_list and s["a"].is_categorical and s["a"].cardinality == 10
    assert not s["b"].is_list and s["b"].cardinality == 10


def test_folder_with_schema_json(tmp_path):
    (tmp_path / "schema.json").write_text((DATA / "t4r_session.json").read_text())
    assert load_schema(str(tmp_path)).source == str(tmp_path / "schema.json")


def test_in_memory_merlin_schema():
    from merlin.schema import ColumnSchema, Schema as MSchema, Tags
    import merlin.dtypes as md
    m = MSchema([
        ColumnSchema("item", tags=[Tags.ITEM_ID, Tags.CATEGORICAL], dtype=md.int64, is_list=True, is_ragged=True,
                     properties={"domain": {"min": 0, "max": 99}}),
        ColumnSchema("price", tags=[Tags.CONTINUOUS], dtype=md.float32, is_list=True, is_ragged=True),
        ColumnSchema("u", tags=[Tags.USER, Tags.CATEGORICAL], dtype=md.int32, properties={"domain": {"max": 4}}),
        ColumnSchema("flag", tags=[Tags.BINARY_CLASSIFICATION, Tags.TARGET], dtype=md.boolean),
    ])
    s = load_schema(m)
    assert s.source is None
    assert s["item"].is_item_id and s["item"].is_list and s["item"].cardinality == 100
    assert s["price"].dtype == "float" and s["price"].is_list and s["price"].cardinality is None
    assert s["u"].cardinality == 5 and not s["u"].is_list
    assert s["flag"].dtype == "bool" and s["flag"].is_target
    assert all(t == t.lower() and isinstance(t, str) for c in s for t in c.tags)


def test_specc_schema_returned_as_is():
    s = Schema.from_columns([{"name": "x", "tags": ["item_id", "categorical"], "is_list": True, "cardinality": 5}])
    assert load_schema(s) is s


# --- shipped example schemas ---------------------------------------------------------------------

def test_shipped_schemas_load():
    eco = load_schema(SCHEMAS / "ecommerce.pbtxt")
    assert [c.name for c in eco.item_id_columns()] == ["item_id-list"]
    assert eco["item_id-list"].cardinality == 1000 and eco["weekday"].cardinality == 8
    assert eco["purchase"].is_target and eco["revenue"].is_target
    retail = load_schema(SCHEMAS / "retail.pbtxt")
    assert [c.name for c in retail.item_id_columns()] == ["item_id_seq"]
    assert "item_id" not in (SCHEMAS / "retail.pbtxt").read_text().split("tag:")[1]  # item + id convention
    assert retail["item_id_seq"].cardinality == 2000
    assert retail["user_id"].tags >= {"user", "id"} and not retail["user_id"].is_item_id
    assert not retail["user_id"].is_target and retail["clicked"].is_target
    assert not retail["brand"].is_list and retail["price_seq"].is_list and retail["category_seq"].is_list
    ml = load_schema(SCHEMAS / "movielens.pbtxt")
    assert ml["item_id-list"].cardinality == 1683 and ml["item_id-list"].is_list
    assert ml["genre-list"].cardinality == 20 and ml["rating-list"].is_continuous
    assert ml["user_gender"].cardinality == 3 and ml["user_occupation"].cardinality == 22
    assert not any(p.suffix == ".json" for p in SCHEMAS.parent.rglob("*") if "schemas" in p.parts)


def test_default_schema_matches_ecommerce():
    from specc.synth import default_schema
    eco = load_schema(SCHEMAS / "ecommerce.pbtxt")
    d = default_schema()
    assert [(c.name, c.tags, c.dtype, c.is_list, c.cardinality, c.value_count) for c in d] == \
        [(c.name, c.tags, c.dtype, c.is_list, c.cardinality, c.value_count) for c in eco]


# --- round trip ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["t4r_session.json", "t4r_session.pbtxt", "merlin_core.pbtxt"])
def test_round_trip(tmp_path, name):
    s = load_schema(DATA / name)
    written = save_schema(s, tmp_path / "out" / "schema.pbtxt")
    back = load_schema(written)
    assert back.columns == s.columns
    # merlin itself reads our file back the same way it reads the original
    from merlin.schema.io.tensorflow_metadata import TensorflowMetadata
    m = TensorflowMetadata.from_proto_text_file(str(tmp_path / "out")).to_merlin_schema()
    assert [c.name for c in m] == s.names


def test_round_trip_python_built(tmp_path):
    s = Schema.from_columns([
        {"name": "item", "tags": ["item", "id", "categorical", "list"], "is_list": True, "cardinality": 7,
         "value_count": (1, 9)},
        {"name": "w", "tags": ["continuous", "list"], "dtype": "float", "is_list": True},
        {"name": "b", "tags": ["binary_classification", "target"], "dtype": "bool"},
        {"name": "s", "tags": [], "dtype": "string"},
    ])
    back = load_schema(save_schema(s, tmp_path))            # a folder: written as schema.pbtxt
    assert back.source == str(tmp_path / "schema.pbtxt")
    assert back.columns == s.columns


# --- errors ----------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    (tmp_path / "schema.pbtxt").write_text("")
    with pytest.raises(SpecError) as e:
        load_schema(tmp_path / "shcema.pbtxt")
    assert _code(e) == "schema_not_found"
    assert "schema.pbtxt" in (e.value.issues[0].hint or "")


def test_folder_without_schema(tmp_path):
    with pytest.raises(SpecError) as e:
        load_schema(tmp_path)
    assert _code(e) == "schema_not_found"


@pytest.mark.parametrize("name,text", [
    ("schema.pbtxt", "feature { name: \"a\" type: INT annotation { tag: "),          # truncated
    ("schema.pbtxt", "this is not a schema at all"),
    ("schema.pbtxt", ""),
    ("schema.pbtxt", "# only a comment\n"),
    ("schema.json", "{\"feature\": [ {\"name\": "),                                   # truncated JSON
    ("schema.json", "{\"specc\": 1, \"inputs\": {}}"),                               # a spec, not a schema
    ("schema.json", "[1, 2, 3]"),
    ("schema.pbtxt", 'feature { name: "a" type: FLOAT annotation { tag: "continuous" tag: "categorical" } }'),
])
def test_garbled_files(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        load_schema(path)
    assert _code(e) == "schema_unreadable"
    assert e.value.issues[0].hint


def test_binary_file(tmp_path):
    path = tmp_path / "schema.pbtxt"
    path.write_bytes(os.urandom(256) + b"\xff\xfe")
    with pytest.raises(SpecError) as e:
        load_schema(path)
    assert _code(e) == "schema_unreadable"


def test_wrong_object():
    with pytest.raises(SpecError) as e:
        load_schema(42)
    assert _code(e) == "schema_unreadable"


def test_column_view_unchanged():
    c = Column("x", frozenset({"item", "id"}), "int", True, 10)
    assert c.is_item_id and c.value_count is None


# --- problems merlin-core reads silently ---------------------------------------------------------

def _issues(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        load_schema(path)
    assert e.value.source == str(path)
    assert all(i.path == "$.schema" and i.hint and i.column in i.message for i in e.value.issues)
    return [(i.code, i.column) for i in e.value.issues]


def _json_feature(name, tags, max_=None, min_=None):
    feature = {"name": name, "type": "INT", "annotation": {"tag": tags}}
    if max_ is not None or min_ is not None:
        feature["intDomain"] = {k: str(v) for k, v in (("min", min_), ("max", max_)) if v is not None}
        feature["intDomain"]["isCategorical"] = "categorical" in tags
    return feature


_ITEM = 'feature { name: "item_id-list" type: INT int_domain { max: 99 is_categorical: true } annotation { tag: "list" } }\n'


def test_duplicate_column_pbtxt(tmp_path):
    text = _ITEM + 'feature { name: "x" type: FLOAT }\n' + _ITEM.replace("99", "5")
    assert _issues(tmp_path, "schema.pbtxt", text) == [("duplicate_column", "item_id-list")]


def test_duplicate_column_json(tmp_path):
    features = [_json_feature("a", ["categorical"], 9), _json_feature("a", ["categorical"], 9),
                _json_feature("a", ["categorical"], 9), _json_feature("b", ["categorical"], 9)]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"feature": features}))
    with pytest.raises(SpecError) as e:
        load_schema(path)
    assert [(i.code, i.column) for i in e.value.issues] == [("duplicate_column", "a")]
    assert "'a' is defined 3 times" in e.value.issues[0].message


@pytest.mark.parametrize("domain,problem", [
    ("int_domain { max: 0 is_categorical: true }", "max 0 leaves no id besides the padding id 0"),
    ("int_domain { is_categorical: true }", "max 0 leaves no id"),                     # no max: merlin reads 0
    ('int_domain { max: -3 } annotation { tag: "categorical" }', "max -3 leaves no id"),
    ("int_domain { min: 5 max: 2 is_categorical: true }", "min 5 is greater than max 2"),
    ("int_domain { min: 5 max: 0 is_categorical: true }", "max 0 leaves no id"),
    ("int_domain { min: -1 max: 9 is_categorical: true }", "min -1 is negative"),
    ("int_domain { min: 5 max: 2 }", "min 5 is greater than max 2"),                  # not categorical
    ("int_domain { min: 5 }", "min 5 is greater than max 0"),
])
def test_invalid_domain(tmp_path, domain, problem):
    path = tmp_path / "schema.pbtxt"
    path.write_text(f'feature {{ name: "genre" type: INT {domain} }}\n')
    with pytest.raises(SpecError) as e:
        load_schema(path)
    (issue,) = e.value.issues
    assert (issue.code, issue.column) == ("invalid_domain", "genre")
    assert issue.message.startswith("column 'genre' has an invalid int_domain: " + problem)
    assert ("0 reserved for padding" in issue.hint) == ("categorical" in domain)


@pytest.mark.parametrize("domain,cardinality,int_range", [
    ("int_domain { max: 1 is_categorical: true }", 2, None),       # the smallest real vocabulary: id 1 + padding
    ("int_domain { min: 3 max: 3 }", None, (3, 3)),
    ("int_domain { min: -5 max: -1 }", None, (-5, -1)),            # negative values are fine when not ids
])
def test_valid_domain_edges(tmp_path, domain, cardinality, int_range):
    (tmp_path / "schema.pbtxt").write_text(f'feature {{ name: "g" type: INT {domain} }}\n')
    g = load_schema(tmp_path)["g"]
    assert (g.cardinality, g.int_range) == (cardinality, int_range)


def test_invalid_domain_in_memory_merlin_schema():
    from merlin.schema import ColumnSchema, Schema as MSchema, Tags
    import merlin.dtypes as md
    m = MSchema([ColumnSchema("u", tags=[Tags.CATEGORICAL], dtype=md.int64, properties={"domain": {"max": 0}})])
    with pytest.raises(SpecError) as e:
        load_schema(m)
    assert [(i.code, i.column) for i in e.value.issues] == [("invalid_domain", "u")]


def test_json_tag_as_string(tmp_path):
    # merlin-core would read "categorical" as the tags {"c", "a", "t", ...}
    features = [_json_feature("country", "categorical", 61), _json_feature("ok", ["categorical"], 61)]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"feature": features}))
    with pytest.raises(SpecError) as e:
        load_schema(path)
    (issue,) = e.value.issues
    assert (issue.code, issue.column) == ("invalid_tags", "country")
    assert '"tag": ["categorical"]' in issue.hint


def test_every_schema_problem_reported_at_once(tmp_path):
    features = [_json_feature("a", ["categorical"], 9), _json_feature("a", ["categorical"], 9),
                _json_feature("b", "item_id"), _json_feature("c", ["categorical"], 0),
                _json_feature("d", ["user"], 1, 4)]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"feature": features}))
    with pytest.raises(SpecError) as e:
        load_schema(path)
    assert [(i.code, i.column) for i in e.value.issues] == [
        ("duplicate_column", "a"), ("invalid_tags", "b"), ("invalid_domain", "c"), ("invalid_domain", "d")]
    assert "4 errors" in str(e.value)
