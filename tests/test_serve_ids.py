"""Raw ids at `specc serve`: a run trained on prepared data (string item ids, an integer categorical with 0 among
its values) takes and returns raw values; the backend's handler in-process, then the real server."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

import specc
from specc.cli import main
from specc.mappings import Mapping
from specc.serve import served_models, write_repository
from specc.serve_handler import BadRequest, Handler, Signature
from specc.serve_ids import RawIds
from specc.serve_limits import ServedModel
from specc.serve_workspace import ServeError
from tests.helpers import train_on_prepared

ITEMS = [f"sku-{i}-ñ" for i in range(12)]
K = 4


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_ids")
    rows = [(f"s{s}", ITEMS[(s + j) % 12], (s * j) % 5, datetime(2024, 1, 1) + timedelta(hours=s, minutes=j))
            for s in range(60) for j in range(2 + s % 4)]
    return train_on_prepared(tmp, rows, ["session_id", "item_id", "brand", "ts"], categorical=["brand"],
                             name="shop")


@pytest.fixture(scope="module")
def repo(prepared, tmp_path_factory):
    path = tmp_path_factory.mktemp("repo")
    names, line = write_repository(prepared / "run", path, k=K)
    assert names == ["shop", "shop_ragged"]
    return path, line


def _handler(repo, name: str) -> Handler:
    folder = repo[0] / name / "1"
    signature = Signature(**json.loads((folder / "signature.json").read_text()))
    return Handler(signature, torch.jit.load(str(folder / "graph.pt")), RawIds(signature, folder))


def raw_rows(prepared, n: int = 6) -> list[dict]:
    """The first `n` valid sessions as raw values: {"item_id-list": [...], "brand-list": [...]}."""
    table = pl.read_parquet(prepared / "data" / "valid").head(n)
    out = [{} for _ in range(len(table))]
    for column in ("item_id-list", "brand-list"):
        for row, values in zip(out, Mapping.load(prepared / "run", column).decode(table[column].to_list())):
            row[column] = values
    return out


def padded(rows: list[dict]) -> dict:
    """Raw rows as the padded model's inputs: items right-padded with "", brands with -1 (0 is a real brand)."""
    L = max(len(r["item_id-list"]) for r in rows)
    return {"item_id-list": np.array([[v.encode() for v in r["item_id-list"]] + [b""] * (L - len(r["item_id-list"]))
                                      for r in rows], dtype=object),
            "brand-list": np.array([r["brand-list"] + [-1] * (L - len(r["brand-list"])) for r in rows], dtype=np.int64)}


def ragged_form(rows: list[dict]) -> dict:
    """Raw rows as the ragged model's inputs (`col__values`, `col__offsets`)."""
    offsets = np.cumsum([0] + [len(r["item_id-list"]) for r in rows]).astype(np.int64)
    return {"item_id-list__values": np.array([v.encode() for r in rows for v in r["item_id-list"]], dtype=object),
            "item_id-list__offsets": offsets, "brand-list__offsets": offsets,
            "brand-list__values": np.array([v for r in rows for v in r["brand-list"]], dtype=np.int64)}


def test_the_guard_knows_each_models_inputs_and_batching(repo):
    assert served_models(repo[0], ["shop", "shop_ragged"]) == {
        "shop": ServedModel(("item_id-list", "brand-list"), batched=True),
        "shop_ragged": ServedModel(("item_id-list__values", "item_id-list__offsets", "brand-list__values",
                                    "brand-list__offsets"), batched=False)}


def test_raw_columns_are_declared_with_their_datatypes_and_padding(repo):
    path, line = repo
    padded_config, ragged_config = ((path / n / "config.pbtxt").read_text() for n in ("shop", "shop_ragged"))
    for config, item in ((padded_config, "item_id-list"), (ragged_config, "item_id-list__values")):
        assert f'name: "{item}"\n    data_type: TYPE_STRING' in config
        assert 'name: "item_ids"\n    data_type: TYPE_STRING' in config
    assert 'name: "brand-list"\n    data_type: TYPE_INT64' in padded_config
    assert 'name: "item_id-list__offsets"\n    data_type: TYPE_INT64' in ragged_config
    assert "item_id-list (BYTES, padding '')" in line and "brand-list (INT64, padding -1)" in line
    assert (path / "shop" / "1" / "categories" / "item_id.parquet").is_file()


def test_raw_ids_in_and_out_equal_the_model_on_internal_ids(prepared, repo):
    model = specc.load(prepared / "run")
    rows = raw_rows(prepared)
    table = pl.read_parquet(prepared / "data" / "valid").head(len(rows))
    L = max(len(r["item_id-list"]) for r in rows)
    batch = {c: torch.tensor([v + [0] * (L - len(v)) for v in table[c].to_list()]) for c in model.list_columns}
    scores, ids = model.recommend(batch, k=K)
    expected = Mapping.load(prepared / "run", "item_id-list").decode(ids.tolist())
    result = _handler(repo, "shop")([padded(rows)])[0]
    assert [[v.decode() for v in r] for r in result["item_ids"]] == expected
    np.testing.assert_allclose(result["scores"], scores.numpy(), rtol=1e-5, atol=1e-6)
    result = _handler(repo, "shop_ragged")([ragged_form(rows)])[0]
    assert [[v.decode() for v in r] for r in result["item_ids"]] == expected


def test_unknown_raw_ids_fail_their_request_or_take_the_oov_id(prepared, repo):
    handler = _handler(repo, "shop")
    good = padded(raw_rows(prepared, 3))
    unknown_item = {**good, "item_id-list": good["item_id-list"].copy()}
    unknown_item["item_id-list"][1, 0] = "nope".encode()
    unknown_brand = {**good, "brand-list": good["brand-list"].copy()}
    unknown_brand["brand-list"][2, 0] = 99
    results = handler([good, unknown_item, unknown_brand])
    assert isinstance(results[1], BadRequest)
    assert "input 'item_id-list': 1 value(s) of 'item_id' unknown" in str(results[1])
    assert "row 1: 'nope'" in str(results[1])
    np.testing.assert_array_equal(results[0]["item_ids"], handler([good])[0]["item_ids"])   # its neighbour is fine
    oov = handler.codec.encode(unknown_brand, 3)["brand-list"]
    assert oov[2, 0] == 1 and (oov[0] == handler.codec.encode(good, 3)["brand-list"][0]).all()   # OOV id 1
    assert not isinstance(results[2], BadRequest)


@pytest.mark.parametrize("edit, problem", [
    (lambda r: r["item_id-list"].__setitem__((0, 0), b""), "not right-padded in row(s) 0"),
    (lambda r: r["item_id-list"].__setitem__((1, slice(None)), b""), "empty session(s) in row(s) 1"),
    (lambda r: r["item_id-list"].__setitem__((0, 0), b"\xff"), "must hold UTF-8 strings"),
])
def test_padding_in_raw_form(prepared, repo, edit, problem):
    request = padded(raw_rows(prepared, 2))
    request = {c: a.copy() for c, a in request.items()}
    edit(request)
    result = _handler(repo, "shop")([request])[0]
    assert isinstance(result, BadRequest) and problem in str(result), result


def test_ragged_values_never_hold_padding(prepared, repo):
    rows = raw_rows(prepared, 2)
    n = [len(r["item_id-list"]) for r in rows]
    items = [v.encode() for r in rows for v in r["item_id-list"]]
    items[n[0]] = b""
    offsets = np.array([0, n[0], n[0] + n[1]], dtype=np.int64)
    request = {"item_id-list__values": np.array(items, dtype=object), "item_id-list__offsets": offsets,
               "brand-list__values": np.array([v for r in rows for v in r["brand-list"]]),
               "brand-list__offsets": offsets}
    result = _handler(repo, "shop_ragged")([request])[0]
    assert isinstance(result, BadRequest) and "holds the padding value '' in row(s) 1" in str(result)


def test_internal_ids_and_runs_without_mappings(prepared, tmp_path):
    write_repository(prepared / "run", tmp_path / "internal", k=K, ids="internal")
    config = (tmp_path / "internal" / "shop" / "config.pbtxt").read_text()
    assert "TYPE_STRING" not in config and not json.loads(
        (tmp_path / "internal" / "shop" / "1" / "signature.json").read_text())["raw"]
    bare = tmp_path / "bare"
    shutil.copytree(prepared / "run", bare)
    shutil.rmtree(bare / "categories")
    with pytest.raises(ServeError, match="--ids internal"):
        write_repository(bare, tmp_path / "raw", k=K, ids="raw")
    _, line = write_repository(bare, tmp_path / "default", k=K)
    assert line == "raw ids: none; model ids: item_id-list, brand-list"


def test_a_raw_value_that_is_the_padding_cannot_be_served_raw(prepared, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(prepared / "run", run)
    items = pl.read_parquet(run / "categories" / "item_id.parquet")
    items.with_columns(pl.when(pl.col("id") == 3).then(pl.lit("")).otherwise(pl.col("value")).alias("value")) \
        .write_parquet(run / "categories" / "item_id.parquet")
    with pytest.raises(ServeError, match="empty string as a raw value"):
        write_repository(run, tmp_path / "repo", k=K)


def test_top_k_slots_without_an_item_come_back_as_padding(prepared, repo):
    codec = _handler(repo, "shop").codec
    known = Mapping.load(prepared / "run", "item_id-list").decode([[3]])[0][0]
    out = codec.decode({"item_ids": np.array([[3, -1]]), "scores": np.array([[0.5, -np.inf]])})
    assert out["item_ids"].tolist() == [[known.encode(), b""]] and out["scores"][0, 1] == -np.inf

# ---------------------------------------------------------------------- through the real server (slow)

@pytest.fixture(scope="module")
def raw_server(prepared, tmp_path_factory):
    from tests.test_serve import serving   # skips where the serve extra is missing
    yield from serving(prepared / "run", tmp_path_factory, tmp_path_factory.mktemp("raw_tmp"), model="shop")


def _infer_json(server, inputs: list) -> tuple[int, dict]:
    import urllib.error
    import urllib.request
    request = urllib.request.Request(f"http://{server['url']}/v2/models/shop/infer", method="POST",
                                     data=json.dumps({"inputs": inputs}).encode())
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_server_takes_and_returns_raw_ids_like_recommend(raw_server, prepared):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tests.test_serve import K as served_k
    out = prepared / "recommend.jsonl"
    assert main(["recommend", str(prepared / "run"), "--data", str(prepared / "data" / "valid"), "--k",
                 str(served_k), "--out", str(out)]) == 0
    expected = [json.loads(line) for line in out.read_text().splitlines()]
    request = padded(raw_rows(prepared, len(expected)))
    client = raw_server["client"]
    metadata = client.get_model_metadata("shop")
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == {"item_id-list": "BYTES", "brand-list": "INT64"}
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {"item_ids": "BYTES", "scores": "FP32"}
    for module in (httpclient, grpcclient):
        inputs = [module.InferInput(c, list(a.shape), "BYTES" if a.dtype == object else "INT64")
                  for c, a in request.items()]
        for i, a in zip(inputs, request.values()):
            i.set_data_from_numpy(a)
        client = raw_server["client"] if module is httpclient else \
            grpcclient.InferenceServerClient(f"127.0.0.1:{raw_server['grpc']}")
        result = client.infer("shop", inputs)
        assert [[v.decode() for v in r] for r in result.as_numpy("item_ids")] == [e["item_ids"] for e in expected]
        np.testing.assert_allclose(result.as_numpy("scores"), [e["scores"] for e in expected], atol=1e-5)
    ragged = []
    for name, a in ragged_form(raw_rows(prepared, len(expected))).items():
        ragged.append(httpclient.InferInput(name, list(a.shape), "BYTES" if a.dtype == object else "INT64"))
        ragged[-1].set_data_from_numpy(a)
    result = raw_server["client"].infer("shop_ragged", ragged)
    assert [[v.decode() for v in r] for r in result.as_numpy("item_ids")] == [e["item_ids"] for e in expected]


@pytest.mark.slow
def test_server_answers_unknown_raw_ids_with_a_400_naming_them(raw_server, prepared):
    rows = raw_rows(prepared, 2)
    request = padded(rows)
    items = [v.decode() for v in request["item_id-list"].reshape(-1)]
    shape = list(request["item_id-list"].shape)
    brands = request["brand-list"].reshape(-1).tolist()
    unknown = items.copy()
    unknown[shape[1]] = "sku-404"
    status, answer = _infer_json(raw_server, [
        {"name": "item_id-list", "shape": shape, "datatype": "BYTES", "data": unknown},
        {"name": "brand-list", "shape": shape, "datatype": "INT64", "data": brands}])
    assert status == 400 and "row 1: 'sku-404'" in answer["error"], (status, answer)
    status, answer = _infer_json(raw_server, [
        {"name": "item_id-list", "shape": shape, "datatype": "BYTES", "data": items},
        {"name": "brand-list", "shape": shape, "datatype": "INT64", "data": brands}])
    assert status == 200 and answer["outputs"][0]["name"] == "item_ids"
    assert all(v in ITEMS for v in answer["outputs"][0]["data"]), answer



@pytest.mark.slow
def test_server_answers_unknown_inputs_and_empty_batches_in_specc_words(raw_server, prepared):
    import grpc
    import tritonclient.grpc as grpcclient
    request = padded(raw_rows(prepared, 2))
    shape = list(request["item_id-list"].shape)
    good = [{"name": "item_id-list", "shape": shape, "datatype": "BYTES",
             "data": [v.decode() for v in request["item_id-list"].reshape(-1)]},
            {"name": "brand-list", "shape": shape, "datatype": "INT64",
             "data": request["brand-list"].reshape(-1).tolist()}]
    empty = [{**i, "shape": [0, shape[1]], "data": []} for i in good]
    foo = {"name": "foo", "shape": shape, "datatype": "INT64", "data": [0] * (shape[0] * shape[1])}
    for inputs, problem in (
            (empty, f"input 'item_id-list' has shape [0, {shape[1]}]: inputs must have at least one row "
                    "(batch dimension 0)"),
            ([foo] + good, "input 'foo' is not an input of model 'shop' (its inputs: item_id-list, brand-list)")):
        status, answer = _infer_json(raw_server, inputs)
        assert (status, answer) == (400, {"error": problem})
        grpc_inputs = [grpcclient.InferInput(i["name"], i["shape"], i["datatype"]) for i in inputs]
        for entry, i in zip(grpc_inputs, inputs):
            entry.set_data_from_numpy(np.array(i["data"], dtype=object if i["datatype"] == "BYTES" else np.int64)
                                      .reshape(i["shape"]))
        with grpcclient.InferenceServerClient(f"127.0.0.1:{raw_server['grpc']}") as client:
            with pytest.raises(grpcclient.InferenceServerException) as info:
                client.infer("shop", grpc_inputs)
        assert info.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT) and info.value.message() == problem
        status, answer = _infer_json(raw_server, good)
        assert status == 200 and answer["outputs"][0]["name"] == "item_ids", answer
