"""inputs.pretrained: vectors per id from .npy, .safetensors and parquet files, frozen or fine-tuned, projected,
checked against the spec's dim and the column's ids (located errors), and saved and exported with the model."""
import copy

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import save_file

import specc
from specc.export import InferenceModel, trace
from specc.synth import default_schema, synthesize
from specc.train import train

SCHEMA = default_schema()   # item_id-list: 1,000 ids, category-list: 50, weekday (scalar): 8
N_ITEMS = 1000
SPEC = {"specc": 1, "inputs": {"max_sequence_length": 8, "features": ["item_id-list", "category-list", "weekday"],
                               "embeddings": {"default_dim": 16}},
        "body": {"kind": "transformer", "architecture": "native", "d_model": 16, "n_head": 2, "n_layer": 1},
        "tasks": [{"kind": "next_item"}], "training": {"batch_size": 16}}


def vectors(rows=N_ITEMS, dim=8, seed=0):
    table = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    table[0] = 0
    return table


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "items.npy"
    np.save(path, vectors())
    return path


def spec_with(entry: dict, **inputs) -> dict:
    spec = copy.deepcopy(SPEC)
    spec["inputs"]["pretrained"] = {"text": entry} if "kind" in entry else entry
    spec["inputs"].update(inputs)
    return spec


def issues(spec) -> list[tuple[str, str]]:
    with pytest.raises(specc.SpecError) as info:
        specc.compile(spec, SCHEMA)
    assert all(i.message for i in info.value.issues)
    return [(i.path, i.code) for i in info.value.issues]


def one_step(model):
    """A training step with Adam; returns the state before it."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(model.random_batch(8, min_length=2))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    opt.step()
    return before


def test_frozen_vectors_compile_into_the_plan_and_stay_frozen_while_the_projection_trains(npy, seed):
    spec = spec_with({"kind": "npy", "path": str(npy), "dim": 8, "projection": 12})
    plan = specc.compile(spec, SCHEMA)
    (p,) = plan.inputs.pretrained
    assert (p.column, p.sequential, p.rows, p.dim, p.trainable, p.projection, p.width) == \
        ("item_id-list", True, N_ITEMS, 8, False, 12, 12)
    assert plan.inputs.part_widths == (16, 16, 16, 12) and plan.inputs.aggregated_width == 60
    assert "pretrained vectors" in plan.summary() and "frozen" in plan.summary()
    assert plan.to_dict()["inputs"]["pretrained"][0]["path"] == str(npy)
    model = specc.build(spec, SCHEMA)
    assert sum(p.numel() for p in model.parameters()) == plan.parameters
    block = model.inputs.pretrained[0]
    assert torch.equal(block.weight, torch.from_numpy(vectors())) and not block.weight.requires_grad
    assert "inputs.pretrained.0.weight" in model.state_dict()   # saved with the weights
    before = one_step(model)
    after = model.state_dict()
    assert torch.equal(after["inputs.pretrained.0.weight"], before["inputs.pretrained.0.weight"])
    assert not torch.equal(after["inputs.pretrained.0.projection.weight"],
                           before["inputs.pretrained.0.projection.weight"])


def test_fine_tuned_vectors_are_parameters_that_move(npy, seed):
    spec = spec_with({"kind": "npy", "path": str(npy), "dim": 8, "trainable": True})
    plan = specc.compile(spec, SCHEMA)
    model = specc.build(spec, SCHEMA)
    assert sum(p.numel() for p in model.parameters()) == plan.parameters
    # its rows, and 8 more inputs to the layer norm (weight and bias) and to the inserted Linear to d_model 16
    assert plan.parameters == specc.compile(SPEC, SCHEMA).parameters + N_ITEMS * 8 + 2 * 8 + 8 * 16
    before = one_step(model)
    moved = model.state_dict()["inputs.pretrained.0.weight"]
    assert not torch.equal(moved, before["inputs.pretrained.0.weight"])
    assert torch.equal(moved[0], torch.zeros(8))   # padding keeps no gradient


@pytest.mark.parametrize("projection, width", [(None, 8), (16, 16), (40, 40)])
def test_projection_sets_the_parts_width(npy, projection, width):
    entry = {"kind": "npy", "path": str(npy), "dim": 8, **({"projection": projection} if projection else {})}
    plan = specc.compile(spec_with(entry), SCHEMA)
    assert plan.inputs.pretrained[0].width == width and plan.inputs.part_widths[-1] == width
    model = specc.build(spec_with(entry), SCHEMA)
    x = model.inputs(model.random_batch(3), 3, 8)
    assert x.shape == (3, 8, 16)   # then projected to d_model


def test_sum_aggregation_needs_the_vectors_as_wide_as_the_other_parts(npy):
    entry = {"kind": "npy", "path": str(npy), "dim": 8}
    assert specc.compile(spec_with({**entry, "projection": 16}, aggregation={"kind": "sum"}), SCHEMA)
    with pytest.raises(specc.SpecError) as info:
        specc.compile(spec_with(entry, aggregation={"kind": "sum"}), SCHEMA)
    (issue,) = info.value.issues
    assert (issue.path, issue.code) == ("$.inputs.aggregation", "shape_mismatch") and "text=8" in issue.message


def test_vectors_of_a_scalar_column_are_broadcast_along_the_sequence(tmp_path):
    np.save(tmp_path / "weekdays.npy", vectors(rows=8, dim=4))
    spec = spec_with({"kind": "npy", "path": str(tmp_path / "weekdays.npy"), "dim": 4, "column": "weekday"})
    (p,) = specc.compile(spec, SCHEMA).inputs.pretrained
    assert (p.column, p.sequential, p.rows) == ("weekday", False, 8)
    model = specc.build(spec, SCHEMA)
    model.eval()
    batch = model.random_batch(2)
    part = model.inputs.pretrained[0](batch["weekday"])
    assert part.shape == (2, 4)
    out = model(batch)
    assert torch.isfinite(out["loss"])


def test_safetensors_with_ids_places_each_vector_at_its_id_and_zero_fills_when_asked(tmp_path):
    ids = np.array([7, 3, 999, 1], dtype=np.int64)
    values = vectors(rows=4, dim=8, seed=1)
    save_file({"emb": values, "item_ids": ids}, str(tmp_path / "v.safetensors"))
    entry = {"kind": "safetensors", "path": str(tmp_path / "v.safetensors"), "dim": 8, "ids": "item_ids"}
    assert issues(spec_with(entry)) == [("$.inputs.pretrained.text.path", "incomplete_coverage")]
    table = specc.build(spec_with({**entry, "missing": "zero"}), SCHEMA).inputs.pretrained[0].weight
    assert torch.equal(table[torch.from_numpy(ids)], torch.from_numpy(values))
    others = torch.ones(N_ITEMS, dtype=torch.bool)
    others[torch.from_numpy(ids)] = False
    assert not table[others].any()


def test_a_parquet_item_table_gives_one_vector_per_item(tmp_path):
    values = vectors(dim=3)
    ids = np.arange(N_ITEMS)[::-1].copy()
    pq.write_table(pa.table({"item": ids, "embedding": pa.array(list(values[ids]), pa.list_(pa.float32()))}),
                   tmp_path / "items.parquet")
    entry = {"kind": "parquet", "path": str(tmp_path / "items.parquet"), "dim": 3, "ids": "item",
             "vectors": "embedding"}
    table = specc.build(spec_with(entry), SCHEMA).inputs.pretrained[0].weight
    assert torch.equal(table, torch.from_numpy(values))


def test_session_data_gives_each_items_vector_from_the_positions_it_appears_at(tmp_path):
    values = vectors(dim=2)
    sessions = [[5, 9, 5], [9, 1], [3]]
    per_position = [[list(values[i]) for i in s] for s in sessions]
    pq.write_table(pa.table({"item_id-list": sessions, "item_vec-list": per_position}), tmp_path / "part.0.parquet")
    (tmp_path / "schema.pbtxt").write_text("not parquet")   # a data folder's other files are left alone
    entry = {"kind": "parquet", "path": str(tmp_path), "dim": 2, "ids": "item_id-list", "vectors": "item_vec-list",
             "missing": "zero"}
    table = specc.build(spec_with(entry), SCHEMA).inputs.pretrained[0].weight
    seen = torch.tensor([1, 3, 5, 9])
    assert torch.equal(table[seen], torch.from_numpy(values)[seen]) and table.abs().sum(1).count_nonzero() == 4


def _write_bad(tmp_path, case):
    """The file of one bad case; returns its path."""
    path = tmp_path / ("v.npy" if case.startswith("npy") else "v.safetensors" if case.startswith("st") else "v.parquet")
    if case == "npy_garbage":
        path.write_bytes(b"not a numpy file")
    elif case == "npy_1d":
        np.save(path, np.zeros(N_ITEMS, dtype=np.float32))
    elif case == "npy_ints":
        np.save(path, np.ones((N_ITEMS, 8), dtype=np.int64))
    elif case == "npy_short":
        np.save(path, vectors(rows=N_ITEMS - 1))
    elif case == "npy_long":
        np.save(path, vectors(rows=N_ITEMS + 5))
    elif case == "npy_nan":
        table = vectors()
        table[17, 3] = np.nan
        np.save(path, table)
    elif case.startswith("npy"):
        np.save(path, vectors())
    elif case.startswith("st_"):
        tensors = {"vectors": vectors(rows=4), "ids": np.array([1, 2, 3, 4], dtype=np.int64)}
        if case == "st_duplicate_ids":
            tensors["ids"] = np.array([1, 2, 2, 4], dtype=np.int64)
        elif case == "st_ids_outside":
            tensors["ids"] = np.array([1, 2, 3, N_ITEMS], dtype=np.int64)
        elif case == "st_ids_length":
            tensors["ids"] = np.array([1, 2, 3], dtype=np.int64)
        elif case == "st_two_tensors":
            tensors["other"] = vectors(rows=4)
        save_file(tensors, str(path))
    elif case == "pq_misaligned":
        pq.write_table(pa.table({"id": [[1, 2], [3]], "vec": [[[0.5] * 8] * 2, [[0.5] * 8] * 2]}), path)
    elif case == "pq_inconsistent":
        pq.write_table(pa.table({"id": [[1, 2], [2]], "vec": [[[0.5] * 8] * 2, [[0.25] * 8]]}), path)
    else:
        lists = [[0.5] * 8] * 3 + [[0.5] * 7]
        pq.write_table(pa.table({"id": [1, 2, 3, 4], "vec": lists}), path)
    return path


BAD = [  # case, extra spec keys, expected (key, code)
    ("npy_missing", {}, ("path", "file_not_found")),
    ("npy_garbage", {}, ("path", "file_unreadable")),
    ("npy_1d", {}, ("path", "invalid_vectors")),
    ("npy_ints", {}, ("path", "invalid_vectors")),
    ("npy_short", {}, ("path", "incomplete_coverage")),
    ("npy_long", {}, ("path", "id_out_of_range")),
    ("npy_nan", {}, ("path", "non_finite")),
    ("npy_dim", {"dim": 12}, ("dim", "shape_mismatch")),
    ("st_unknown_tensor", {"vectors": "vector"}, ("vectors", "unknown_tensor")),
    ("st_two_tensors", {}, ("vectors", "ambiguous_tensor")),
    ("st_duplicate_ids", {"ids": "ids", "missing": "zero"}, ("ids", "duplicate_ids")),
    ("st_ids_outside", {"ids": "ids", "missing": "zero"}, ("ids", "id_out_of_range")),
    ("st_ids_length", {"ids": "ids", "missing": "zero"}, ("ids", "invalid_ids")),
    ("st_unknown_ids", {"ids": "item_ids", "missing": "zero"}, ("ids", "unknown_tensor")),
    ("pq_unknown_column", {"ids": "item", "vectors": "vec"}, ("ids", "unknown_column")),
    ("pq_ragged", {"ids": "id", "vectors": "vec", "missing": "zero"}, ("vectors", "invalid_vectors")),
    ("pq_misaligned", {"ids": "id", "vectors": "vec", "missing": "zero"}, ("vectors", "misaligned_vectors")),
    ("pq_inconsistent", {"ids": "id", "vectors": "vec", "missing": "zero"}, ("vectors", "inconsistent_vectors")),
    ("pq_empty_folder", {"ids": "id", "vectors": "vec"}, ("path", "file_not_found")),
    ("npy_column_unknown", {"column": "categroy-list"}, ("column", "unknown_column")),
    ("npy_column_continuous", {"column": "price-list"}, ("column", "not_categorical")),
    ("npy_column_not_a_feature", {"column": "session_id"}, ("column", "not_categorical")),
]


@pytest.mark.parametrize("case, extra, expected", BAD, ids=[b[0] for b in BAD])
def test_bad_vectors_are_located_errors(tmp_path, case, extra, expected):
    path = {"npy_missing": tmp_path / "absent.npy", "pq_empty_folder": tmp_path}.get(case) or _write_bad(tmp_path, case)
    kind = {"npy": "npy", "st": "safetensors", "pq": "parquet"}[case.split("_")[0]]
    entry = {"kind": kind, "path": str(path), "dim": 8, **extra}
    key, code = expected
    assert issues(spec_with(entry)) == [(f"$.inputs.pretrained.text.{key}", code)]


def test_every_problem_is_reported_at_once_with_hints(tmp_path, npy):
    np.save(tmp_path / "short.npy", vectors(rows=10))
    spec = spec_with({"a": {"kind": "npy", "path": str(npy), "dim": 9},
                      "b": {"kind": "npy", "path": str(tmp_path / "short.npy"), "dim": 8}})
    spec["body"]["n_head"] = 3
    with pytest.raises(specc.SpecError) as info:
        specc.compile(spec, SCHEMA)
    got = {i.path: i for i in info.value.issues}
    assert set(got) == {"$.inputs.pretrained.a.dim", "$.inputs.pretrained.b.path", "$.body.n_head"}
    assert '"dim": 8' in got["$.inputs.pretrained.a.dim"].hint
    assert '"missing": "zero"' in got["$.inputs.pretrained.b.path"].hint
    assert got["$.inputs.pretrained.b.path"].column == "item_id-list"


def test_vectors_keyed_by_the_item_id_need_it_among_the_features(npy):
    spec = spec_with({"kind": "npy", "path": str(npy), "dim": 8}, features=["category-list"])
    spec["tasks"] = [{"kind": "binary_classification", "target": "purchase"}]
    spec["masking"] = {"kind": "none"}
    assert issues(spec) == [("$.inputs.pretrained.text", "missing_item_feature")]


def test_structural_errors_in_an_entry_are_located(npy):
    assert issues(spec_with({"kind": "npy", "path": str(npy), "dim": 8, "frozen": True})) == [
        ("$.inputs.pretrained.text.frozen", "unknown_key")]
    assert issues(spec_with({"kind": "npz", "path": str(npy), "dim": 8})) == [
        ("$.inputs.pretrained.text.kind", "unknown_kind")]
    assert issues(spec_with({"kind": "parquet", "path": str(npy), "dim": 8})) == [
        ("$.inputs.pretrained.text.vectors", "missing_key"), ("$.inputs.pretrained.text.ids", "missing_key")]


def test_a_file_changed_after_compiling_is_an_error_when_building(npy):
    from specc.builder import build_from_plan
    plan = specc.compile(spec_with({"kind": "npy", "path": str(npy), "dim": 8}), SCHEMA)
    np.save(npy, vectors(dim=6))
    with pytest.raises(specc.SpecError) as info:
        build_from_plan(plan)
    assert [(i.path, i.code) for i in info.value.issues] == [("$.inputs.pretrained.text.dim", "shape_mismatch")]


def test_a_trained_run_keeps_its_vectors_and_exports_without_the_file(tmp_path, seed):
    synthesize(SCHEMA, tmp_path / "data", n_train=64, n_valid=16, seed=0)
    np.save(tmp_path / "items.npy", vectors())
    spec = spec_with({"kind": "npy", "path": str(tmp_path / "items.npy"), "dim": 8, "projection": 8},
                     max_sequence_length=8)
    train(spec, str(tmp_path / "data" / "train.parquet"), str(tmp_path / "run"), epochs=1, progress=False,
          log=lambda m: None)
    (tmp_path / "items.npy").unlink()   # the run holds the vectors itself
    model = specc.load(tmp_path / "run")
    assert torch.equal(model.inputs.pretrained[0].weight, torch.from_numpy(vectors()))
    batch = model.random_batch(5, min_length=2)
    module = InferenceModel(specc.load(tmp_path / "run"), k=10)
    traced = trace(module)
    expected_scores, expected_ids = model.recommend(batch, k=10)
    got = traced({c: (v if v.dim() == 2 else v[:, None]) for c, v in batch.items()})
    ids, scores = got[module.output_names.index("item_ids")], got[module.output_names.index("scores")]
    assert torch.equal(ids, expected_ids) and torch.allclose(scores, expected_scores, atol=1e-5)
