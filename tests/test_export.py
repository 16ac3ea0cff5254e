"""specc export: the traced/exported inference graph equals Model.recommend; the Triton layout is complete."""
import json
import warnings

import pytest
import torch
import torch.nn.functional as F

import specc
from specc.export import ExportError, InferenceModel, export, export_program, model_name, trace

SPECS = {"sasrec": "specs/sasrec.json", "multitask": "specs/multitask.json", "bert4rec": "specs/bert4rec.json",
         "xlnet": "specs/xlnet_clm.json"}


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    from pathlib import Path

    from specc.synth import default_schema, synthesize
    from specc.train import train
    root = tmp_path_factory.mktemp("export_runs")
    synthesize(default_schema(), root / "data", n_train=200, n_valid=40, seed=0)
    repo = Path(__file__).resolve().parent.parent
    out = {}
    for name, spec in SPECS.items():
        train(repo / spec, root / "data" / "train.parquet", root / name, eval_data=root / "data" / "valid.parquet",
              epochs=1, progress=False, log=lambda m: None)
        out[name] = root / name
    return out


def _batch(model, B=7, L=None, seed=0):
    """A padded batch with varied lengths (some longer than max_sequence_length), and its ragged form."""
    padded = model.random_batch(B, length=L or model.max_length + 5, seed=seed)
    padded[model.sequence_column][-1, 1:] = 0   # a one-item session
    lengths = (padded[model.sequence_column] != 0).sum(1)
    valid = torch.arange(padded[model.sequence_column].shape[1])[None] < lengths[:, None]
    ragged = {}
    for c, v in padded.items():
        if c in model.list_columns:
            padded[c] = v * valid
            ragged[f"{c}__values"] = v[valid]
            ragged[f"{c}__offsets"] = F.pad(lengths.cumsum(0), (1, 0))
        else:
            ragged[c] = v
    return padded, ragged


def _inputs(padded):
    return {c: (v if v.dim() == 2 else v[:, None]) for c, v in padded.items()}


@pytest.mark.parametrize("name", list(SPECS))
def test_traced_equals_recommend(runs, name):
    model = specc.load(runs[name])
    module = InferenceModel(specc.load(runs[name]), k=15)
    traced = trace(module)
    for B, L in ((7, None), (1, 3), (33, model.max_length)):
        padded, ragged = _batch(model, B, L, seed=B)
        scores, ids = model.recommend(padded, k=15)
        out = traced(_inputs(padded))
        assert torch.equal(out[0], ids)
        torch.testing.assert_close(out[1], scores, rtol=1e-5, atol=1e-5)
        assert (out[0] > 0).all()   # id 0 (padding) is never recommended
    assert module.output_names[:2] == ["item_ids", "scores"]


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_ragged_equals_recommend(runs, name):
    model = specc.load(runs[name])
    traced = trace(InferenceModel(specc.load(runs[name]), k=10, ragged=True))
    padded, ragged = _batch(model, 9)
    scores, ids = model.recommend(ragged, k=10)
    scores2, ids2 = model.recommend(padded, k=10)
    assert torch.equal(ids, ids2)
    out = traced(ragged)
    assert torch.equal(out[0], ids)
    torch.testing.assert_close(out[1], scores, rtol=1e-5, atol=1e-5)


def test_exclude_seen_and_other_tasks(runs):
    model = specc.load(runs["multitask"])
    module = InferenceModel(specc.load(runs["multitask"]), k=12, exclude_seen=True)
    traced = trace(module)
    padded, _ = _batch(model, 6)
    scores, ids = model.recommend(padded, k=12, exclude_seen=True)
    out = traced(_inputs(padded))
    assert module.output_names == ["item_ids", "scores", "purchase", "revenue"]
    assert torch.equal(out[0], ids)
    seen = model.prepare(padded)[0][model.sequence_column]
    assert not (out[0][:, :, None] == seen[:, None, :]).any()
    batch, lengths = model.prepare(padded)
    hidden = model.encode(batch, lengths)
    for j, task in enumerate(["purchase", "revenue"]):
        head = model.scalar_heads[task]
        torch.testing.assert_close(out[2 + j][:, 0], head.predict(head(hidden, lengths)), rtol=1e-5, atol=1e-5)
    assert ((out[2] >= 0) & (out[2] <= 1)).all()   # a probability


def test_exported_program_dynamic_batch(runs):
    model = specc.load(runs["sasrec"])
    module = InferenceModel(specc.load(runs["sasrec"]), k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = export_program(module).module()
    for B in (1, 4, 17):
        padded, _ = _batch(model, B, seed=B)
        out = program(_inputs(padded))
        assert torch.equal(out[0], model.recommend(padded, k=5)[1])


@pytest.mark.parametrize("name, exclude_seen", [("sasrec", False), ("multitask", True), ("xlnet", False)])
def test_onnx_equals_recommend(runs, tmp_path, name, exclude_seen):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = export(runs[name], tmp_path / "exp", format="onnx", k=9, exclude_seen=exclude_seen, log=lambda m: None)
    session = ort.InferenceSession(str(out / "model.onnx"))
    model = specc.load(runs[name])
    triton_name = model_name(model)
    assert (out / "triton" / triton_name / "1" / "model.onnx").is_file()
    assert 'platform: "onnxruntime_onnx"' in (out / "triton" / triton_name / "config.pbtxt").read_text()
    for B, L in ((7, None), (1, 3), (20, model.max_length)):   # batch and length are dynamic axes
        padded, _ = _batch(model, B, L, seed=B)
        scores, ids = model.recommend(padded, k=9, exclude_seen=exclude_seen)
        feeds = {i.name: _inputs(padded)[i.name].numpy() for i in session.get_inputs()}
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        assert torch.equal(torch.from_numpy(got["item_ids"]), ids)
        torch.testing.assert_close(torch.from_numpy(got["scores"]), scores, rtol=1e-4, atol=1e-4)


def test_k_is_checked(runs):
    model = specc.load(runs["sasrec"])
    n = model._item_weight().shape[0]
    with pytest.raises(ExportError, match="k must be between"):
        InferenceModel(model, k=n)


def test_export_writes_triton_repository(runs, tmp_path):
    out = export(runs["multitask"], tmp_path / "exp", k=8, log=lambda m: None)
    sig = json.loads((out / "signature.json").read_text())
    name = sig["name"]
    assert name == "multitask" and sig["k"] == 8
    cfg = (out / "triton" / name / "config.pbtxt").read_text()
    for spec in sig["padded"]["inputs"]:
        assert f'name: "{spec["name"]}"' in cfg
    assert 'name: "item_ids__0"' in cfg and "dims: [ 8 ]" in cfg and "max_batch_size: 64" in cfg
    assert 'platform: "pytorch_libtorch"' in cfg and "TYPE_FP32" in cfg and "TYPE_INT64" in cfg
    rcfg = (out / "triton" / f"{name}_ragged" / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in rcfg and '"item_id-list__offsets"' in rcfg and "dims: [ -1, 8 ]" in rcfg
    model_config = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format
    for text in (cfg, rcfg):   # each config is a valid Triton ModelConfig (strict: unknown fields fail)
        parsed = text_format.Parse(text, model_config.ModelConfig())
        assert parsed.platform == "pytorch_libtorch" and len(parsed.output) >= 2
    loaded = torch.jit.load(str(out / "triton" / name / "1" / "model.pt"))
    model = specc.load(runs["multitask"])
    padded, _ = _batch(model, 5)
    ids = loaded({c: (v if v.dim() == 2 else v[:, None]) for c, v in padded.items()})[0]
    assert torch.equal(ids, model.recommend(padded, k=8)[1])


def test_cli_export(runs, tmp_path, capsys):
    from specc.cli import main
    assert main(["export", str(runs["sasrec"]), "--out", str(tmp_path / "e"), "--k", "5"]) == 0
    assert (tmp_path / "e" / "model.pt").is_file() and (tmp_path / "e" / "triton" / "sasrec" / "1" / "model.pt").is_file()
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "f")]) == 1
    assert "no such run directory" in capsys.readouterr().err
    assert main(["export", str(runs["sasrec"]), "--out", str(tmp_path / "g"), "--k", "100000"]) == 1


def test_loading_a_run_skips_the_compile_time_trial_of_its_body(runs, tmp_path, monkeypatch):
    import specc.nn.hf as hf
    from specc.train import train
    spec = json.loads((runs["sasrec"] / "spec.json").read_text())
    spec["body"] = {**spec["body"], "architecture": "gpt2"}
    data = runs["sasrec"].parent / "data"
    calls = []
    real = hf.check_runs
    monkeypatch.setattr(hf, "check_runs", lambda *a, **k: calls.append(a) or real(*a, **k))
    train(spec, data / "train.parquet", tmp_path / "run", schema=str(data), epochs=1, progress=False,
          log=lambda m: None)
    assert len(calls) == 1   # compiling a Hugging Face body runs it once
    specc.load(tmp_path / "run")   # loading compares the plan with the saved one instead
    assert len(calls) == 1


def test_a_body_that_cannot_be_recorded_is_an_export_error(runs, tmp_path, monkeypatch):
    import specc.export as ex

    def python_call_in_graph(module):
        raise RuntimeError("Could not export Python function call 'GeLUFunction'")
    monkeypatch.setattr(ex, "trace", python_call_in_graph)
    for fmt in ("torchscript", "onnx"):
        with pytest.raises(ExportError, match="cannot be exported as .*GeLUFunction"):
            export(runs["sasrec"], tmp_path / fmt, format=fmt, log=lambda m: None)


def test_a_body_that_cannot_be_recorded_cannot_be_served_either(runs, tmp_path, monkeypatch):
    import specc.export as ex
    from specc.serve import ServeError, write_repository

    def python_call_in_graph(module):
        raise RuntimeError("Could not export Python function call 'GeLUFunction'")
    monkeypatch.setattr(ex, "trace", python_call_in_graph)
    with pytest.raises(ServeError, match="cannot be traced for serving .*GeLUFunction"):
        write_repository(runs["sasrec"], tmp_path / "repo")



def test_exclude_seen_excludes_the_whole_history_beyond_the_window_padded_and_ragged(runs):
    """Rows whose items before the model's window are exactly the items it would rank first: none may come back."""
    model = specc.load(runs["multitask"])
    window = model.random_batch(4, length=model.max_length, min_length=model.max_length, seed=5)
    first = model.recommend(window, k=3, exclude_seen=True)[1]          # the window's own top 3
    long = {c: torch.cat([first if c == model.sequence_column else v[:, :3], v], 1) if c in model.list_columns
            else v for c, v in window.items()}
    lengths = torch.full((4,), model.max_length + 3)
    ragged = {**{f"{c}__values": long[c].reshape(-1) for c in model.list_columns},
              **{f"{c}__offsets": F.pad(lengths.cumsum(0), (1, 0)) for c in model.list_columns},
              **{c: v for c, v in long.items() if c not in model.list_columns}}
    ids = model.recommend(long, k=12, exclude_seen=True)[1]
    assert not (ids[:, :, None] == first[:, None, :]).any()
    for is_ragged, inputs in ((False, _inputs(long)), (True, ragged)):
        traced = trace(InferenceModel(specc.load(runs["multitask"]), k=12, exclude_seen=True, ragged=is_ragged))
        assert torch.equal(traced(inputs)[0], ids), is_ragged
