"""Golden invalid specs: each file in tests/invalid/ fails with exactly the errors in its .expected file."""
import json
from pathlib import Path

import pytest

import specc

CASES = sorted((Path(__file__).parent / "invalid").glob("*.json"))


def expected(path: Path) -> list[tuple[str, str]]:
    lines = path.with_suffix(".expected").read_text().splitlines()
    return sorted(tuple(line.split()) for line in lines if line.strip())


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_invalid_spec_reports_every_error_with_path_and_code(path):
    with pytest.raises(specc.SpecError) as info:
        specc.compile(str(path))
    got = sorted((i.path, i.code) for i in info.value.issues)
    assert got == expected(path)
    for issue in info.value.issues:
        assert issue.message and issue.path.startswith("$")


def test_several_errors_are_reported_at_once():
    assert len(expected(Path(__file__).parent / "invalid" / "several_semantic_errors.json")) >= 4


def test_list_column_targets_are_reported_with_the_other_errors_of_the_spec():
    with pytest.raises(specc.SpecError) as info:
        specc.compile(str(Path(__file__).parent / "invalid" / "list_column_targets.json"))
    codes = {i.path: i.code for i in info.value.issues}
    assert codes == {"$.tasks[1].target": "not_scalar", "$.tasks[2].target": "not_scalar",
                     "$.body.n_head": "shape_mismatch"}
    hints = {i.path: i.hint for i in info.value.issues}
    assert "'revenue'" in hints["$.tasks[1].target"] and "'purchase'" in hints["$.tasks[2].target"]


def test_unknown_column_errors_name_the_column_and_suggest_the_closest():
    with pytest.raises(specc.SpecError) as info:
        specc.compile(str(Path(__file__).parent / "invalid" / "unknown_feature.json"))
    first = info.value.issues[0]
    assert first.column == "item_idd" and "item_id-list" in first.hint


def test_unknown_key_hint_names_the_closest_key():
    with pytest.raises(specc.SpecError) as info:
        specc.compile(str(Path(__file__).parent / "invalid" / "typos_everywhere.json"))
    by_path = {i.path: i for i in info.value.issues}
    assert "'features'" in by_path["$.inputs.featurs"].hint
    assert "'transformer'" in by_path["$.body.kind"].hint


def test_bad_max_sequence_length_hints_at_what_it_holds_and_adds_no_follow_on_errors():
    with pytest.raises(specc.SpecError) as info:
        specc.compile(str(Path(__file__).parent / "invalid" / "bad_max_sequence_length_alone.json"))
    (issue,) = info.value.issues   # not also causal masking's "at least 2 items", which only the stand-in fails
    assert issue.path == "$.inputs.max_sequence_length" and "most recent items" in issue.hint


def test_missing_max_sequence_length_is_reported_with_the_other_errors():
    spec = json.loads((Path(__file__).parent / "invalid" / "bad_max_sequence_length_keeps_other_checks.json").read_text())
    del spec["inputs"]["max_sequence_length"]
    spec["schema"] = str(Path(__file__).parent.parent / "specs" / "schemas" / "ecommerce.pbtxt")
    with pytest.raises(specc.SpecError) as info:
        specc.compile(spec)
    assert {(i.path, i.code) for i in info.value.issues} == {
        ("$.inputs.max_sequence_length", "missing_key"), ("$.inputs.features[1]", "unknown_column"),
        ("$.body.n_head", "shape_mismatch"), ("$.tasks[0].loss.negatives", "too_many_negatives")}
