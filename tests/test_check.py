"""Semantic checks that depend on the schema: default features, 0/1 targets, shared tables with inferred dims."""
import copy
import math

import pytest

import specc
from specc.schema import Schema

COLUMNS = [
    {"name": "items", "tags": ["item_id", "categorical", "list"], "is_list": True, "cardinality": 10_001},
    {"name": "cats", "tags": ["categorical", "list"], "is_list": True, "cardinality": 81},
    {"name": "price", "tags": ["continuous", "list"], "dtype": "float", "is_list": True},
    {"name": "clicked", "tags": [], "int_range": [0, 1]},
    {"name": "stars", "tags": [], "int_range": [1, 5]},
]
SPEC = {"specc": 1, "inputs": {"max_sequence_length": 10, "features": ["items", "cats"]},
        "body": {"kind": "gru", "d_model": 16}, "tasks": [{"kind": "next_item"}]}


def _compile(mutate=lambda s: None, columns=COLUMNS):
    spec = copy.deepcopy(SPEC)
    mutate(spec)
    return specc.compile(spec, Schema.from_columns(columns))


def _issues(mutate=lambda s: None, columns=COLUMNS):
    with pytest.raises(specc.SpecError) as info:
        _compile(mutate, columns)
    return [(i.path, i.code, i.column) for i in info.value.issues]


def test_default_features_report_a_categorical_column_without_cardinality():
    columns = COLUMNS + [{"name": "device", "tags": ["categorical"]}, {"name": "city", "tags": ["categorical"],
                                                                       "dtype": "string"}]

    def mutate(spec):
        del spec["inputs"]["features"]
    assert _issues(mutate, columns) == [("$.inputs.features", "no_cardinality", "device"),
                                        ("$.inputs.features", "no_cardinality", "city")]
    assert [f.column for f in _compile(mutate).inputs.features] == ["items", "cats", "price"]


def test_any_int_column_with_domain_0_1_is_a_binary_target():
    plan = _compile(lambda s: s["tasks"].append({"kind": "binary_classification", "target": "clicked"}))
    assert plan.tasks[1].kind == "binary_classification" and plan.tasks[1].target == "clicked"
    assert _issues(lambda s: s["tasks"].append({"kind": "binary_classification", "target": "stars"})) == [
        ("$.tasks[1].target", "wrong_target_type", "stars")]


@pytest.mark.parametrize("kind", ["regression", "binary_classification"])
def test_a_list_column_target_is_reported_with_the_closest_scalar_column(kind):
    columns = COLUMNS + [{"name": "bought", "tags": [kind], "dtype": "float"},
                         {"name": "bought-list", "tags": [kind, "list"], "dtype": "float", "is_list": True}]
    with pytest.raises(specc.SpecError) as info:
        _compile(lambda s: s["tasks"].append({"kind": kind, "target": "bought-list"}), columns)
    (issue,) = info.value.issues
    assert (issue.path, issue.code, issue.column) == ("$.tasks[1].target", "not_scalar", "bought-list")
    assert "per event" in issue.message and "'bought'" in issue.hint


def test_a_list_column_target_without_a_close_name_is_pointed_to_the_columns_tagged_for_the_task():
    columns = COLUMNS + [{"name": "revenue", "tags": ["regression"], "dtype": "float"},
                         {"name": "spend", "tags": ["continuous", "list"], "dtype": "float", "is_list": True}]
    with pytest.raises(specc.SpecError) as info:
        _compile(lambda s: s["tasks"].append({"kind": "regression", "target": "spend"}), columns)
    (issue,) = info.value.issues
    assert issue.code == "not_scalar" and "'revenue'" in issue.hint


@pytest.mark.parametrize("multiplier", [2.0, 1.0])
def test_shared_table_with_inferred_dim_uses_the_tables_rows(multiplier):
    def mutate(spec):
        spec["inputs"]["embeddings"] = {"infer": {"multiplier": multiplier}, "shared": {"ids": ["items", "cats"]}}
        spec["inputs"]["aggregation"] = {"kind": "sum"}
    (table,) = _compile(mutate).inputs.tables
    assert table.columns == ("items", "cats") and table.rows == 10_001
    assert table.dim == math.ceil(10_001 ** 0.25 * multiplier)


def test_columns_of_one_shared_table_with_different_dims_are_reported():
    def mutate(spec):
        spec["inputs"]["embeddings"] = {"dims": {"items": 16, "cats": 8}, "shared": {"ids": ["items", "cats"]}}
    assert _issues(mutate) == [("$.inputs.embeddings.shared.ids", "shape_mismatch", "items")]
    spec_dim = _compile(lambda s: s["inputs"].update(embeddings={"dims": {"ids": 12}, "shared": {"ids": ["items", "cats"]}}))
    assert spec_dim.inputs.tables[0].dim == 12


def test_the_item_sequence_is_chosen_over_a_scalar_item_id():
    columns = COLUMNS + [{"name": "last_item", "tags": ["item_id", "categorical"], "cardinality": 10_001}]

    def mutate(spec):
        del spec["inputs"]["features"]
    assert _compile(mutate, columns).next_item.target == "items"
