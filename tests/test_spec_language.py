"""The spec language: loading from every source, the published JSON Schema, and robustness to bad input."""
import copy
import json
from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specc
from specc.spec import json_schema

ROOT = Path(__file__).resolve().parent.parent
SASREC = json.loads((ROOT / "specs" / "sasrec.json").read_text())
SCHEMA = specc.load_schema(str(ROOT / "specs" / "schemas" / "ecommerce.pbtxt"))


def test_published_json_schema_is_in_step_with_the_models():
    published = json.loads((ROOT / "specc" / "spec.schema.json").read_text())
    assert published == json_schema(), "run: specc schema > specc/spec.schema.json"


def test_load_spec_from_path_string_and_dict_agree():
    path = ROOT / "specs" / "sasrec.json"
    a = specc.load_spec(str(path))
    b = specc.load_spec(path.read_text())
    c = specc.load_spec(SASREC)
    assert a.to_json_dict() == b.to_json_dict() == c.to_json_dict()
    assert a.base_dir == str(path.parent)


def test_specs_are_frozen():
    spec = specc.load_spec(SASREC)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.name = "other"


@pytest.mark.parametrize("text,code", [
    ("[1, 2]", "invalid_type"),
    ("{not json", "invalid_json"),
    ('{"specc": 7}', "unsupported_version"),
    ('"a string"', "file_not_found"),
])
def test_bad_documents_give_one_located_error(text, code):
    with pytest.raises(specc.SpecError) as info:
        specc.load_spec(text)
    assert [i.code for i in info.value.issues] == [code]


def test_non_utf8_file_is_reported(tmp_path):
    path = tmp_path / "spec.json"
    path.write_bytes(b'{"specc": 1, "name": "caf\xe9"}')
    with pytest.raises(specc.SpecError) as info:
        specc.load_spec(str(path))
    assert info.value.issues[0].code == "invalid_encoding"


# Random mutations of a valid spec: whatever they produce, compiling raises SpecError or succeeds.
PATHS = []


def _collect(node, path=()):
    PATHS.append(path)
    if isinstance(node, dict):
        for k, v in node.items():
            _collect(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _collect(v, path + (i,))


_collect({k: v for k, v in SASREC.items() if k not in ("$schema", "schema")})
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                 st.text(max_size=12), st.lists(st.integers(-2, 30), max_size=3),
                 st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
                 st.sampled_from(["item_id-list", "category-list", "price-list", "purchase", "causal", "mlm", "plm",
                                  "rtd", "none", "gru", "mlp", "transformer", "xlnet", "gpt2", "albert", "bert",
                                  "sampled_softmax", "gbce", "bce", "in_batch", "sum", "item_multiply", 0, 1, 3, 64]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), JUNK, st.sampled_from(["set", "delete", "add"])), min_size=1,
                max_size=3))
def test_mutated_specs_raise_only_spec_errors(mutations):
    spec = copy.deepcopy(SASREC)
    for path, value, action in mutations:
        node = spec
        for part in path[:-1]:
            node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
            if node is None:
                break
        if node is None or not path:
            continue
        key = path[-1]
        if action == "delete" and _has(node, key):
            del node[key]
        elif action == "add" and isinstance(node, dict):
            node[str(value)[:8] or "x"] = value
        elif _has(node, key):
            node[key] = value
    try:
        specc.compile(spec, SCHEMA)
    except specc.SpecError as exc:
        assert exc.issues and all(i.path.startswith("$") and i.code for i in exc.issues)


def _has(node, key):
    return (isinstance(node, dict) and key in node) or (isinstance(node, list) and isinstance(key, int)
                                                         and 0 <= key < len(node))


def _issues(mutate):
    data = copy.deepcopy(SASREC)
    mutate(data)
    with pytest.raises(specc.SpecError) as info:
        specc.load_spec(data)
    return {i.path: i for i in info.value.issues}


@pytest.mark.parametrize("where,value", [
    (("body", "d_model"), "64"), (("body", "d_model"), 64.0), (("body", "n_layer"), True),
    (("tasks", 0, "weight_tying"), "yes"), (("tasks", 0, "weight_tying"), 1), (("training", "epochs"), 2.5),
])
def test_no_type_coercion(where, value):
    def mutate(data):
        node = data
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
    path = "$." + ".".join(str(k) for k in where).replace(".0.", "[0].")
    assert _issues(mutate)[path].code == "invalid_type"


def test_did_you_mean_is_in_the_hint_and_paths_point_at_the_value():
    def mutate(data):
        data["body"]["architecture"] = "xlnett"
        data["tasks"][0]["metrics"] = {"ndcg": [10], "ndgc": [5]}
        data["training"] = {"optimizer": {"kind": "adamm"}, "precision": "bf61"}
    issues = _issues(mutate)
    arch = issues["$.body.architecture"]
    assert arch.code == "unknown_architecture" and arch.hint.startswith("did you mean 'xlnet'")
    assert "did you mean" not in arch.message
    metric = issues["$.tasks[0].metrics.ndgc"]
    assert metric.code == "unknown_metric" and "'ndcg'" in metric.hint
    opt = issues["$.training.optimizer.kind"]
    assert opt.code == "unknown_kind" and "'adam'" in opt.hint and "'adamw'" in opt.hint
    precision = issues["$.training.precision"]
    assert precision.code == "invalid_choice" and "'bf16'" in precision.hint and "'bf61'" in precision.message


@pytest.mark.parametrize("source", [None, 5, 2.5])
def test_a_spec_of_another_type_is_a_spec_error(source):
    with pytest.raises(specc.SpecError, match="a spec is a path, a JSON string or a dict"):
        specc.load_spec(source)


def test_a_json_string_may_start_with_a_byte_order_mark():
    with pytest.raises(specc.SpecError) as e:
        specc.load_spec('\ufeff{"specc": 1}')
    assert all(issue.code != "invalid_json" and issue.code != "file_not_found" for issue in e.value.issues)
