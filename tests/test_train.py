"""End to end on small synthetic data: train -> evaluate -> recommend -> load, resume, and bad data."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import specc
from specc.synth import default_schema, synthesize
from specc.train import train

ROOT = Path(__file__).resolve().parent.parent
SPEC = json.loads((ROOT / "specs" / "sasrec.json").read_text())
SPEC.pop("schema")
SPEC["body"].update(d_model=32, n_layer=1)
SPEC["inputs"]["embeddings"]["default_dim"] = 32


def quiet(_message):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthesize(default_schema(), out, n_train=400, n_valid=60, seed=3)
    return out


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "sasrec"
    result = train(SPEC, str(data / "train.parquet"), str(out), eval_data=str(data / "valid.parquet"), epochs=2,
                   progress=False, log=quiet)
    return out, result


def cli(*args):
    return subprocess.run([sys.executable, "-m", "specc.cli", *map(str, args)], capture_output=True, text=True)


def published(run_dir, name):
    """A file of the run's published checkpoint."""
    return run_dir / json.loads((run_dir / "checkpoint.json").read_text())["checkpoint"] / name


def reseal(run_dir, name):
    """Record a deliberately edited checkpoint file's checksum in the pointer, as a consistent tamperer would."""
    from specc.checkpoint import sha256_file
    pointer = json.loads((run_dir / "checkpoint.json").read_text())
    pointer["sha256"][name] = sha256_file(published(run_dir, name))
    (run_dir / "checkpoint.json").write_text(json.dumps(pointer))


def test_train_writes_a_complete_run_directory(run):
    out, result = run
    for name in ("checkpoint.json", "spec.json", "plan.json", "columns.json", "metrics.json", "log.jsonl"):
        assert (out / name).is_file(), name
    checkpoints = list((out / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["step-000000014"]   # 400 sessions / 64 per batch x 2 epochs
    files = [out / "spec.json", out / "metrics.json", *checkpoints[0].iterdir()]
    assert {f.name for f in files} >= {"model.safetensors", "train_state.safetensors", "train_state.json"}
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {oct(0o666 & ~_umask())}   # safetensors' own is 0600
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("ndcg@10", "recall@20", "mrr@10", "loss", "train_seconds", "train_sessions_per_s"):
        assert key in metrics
    assert 0 < metrics["recall@20"] <= 1 and metrics["ndcg@10"] <= metrics["recall@10"] + 1e-9
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert not any(p.suffix == ".pkl" or p.suffix == ".pt" for p in out.iterdir())


def _umask():
    import os
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_trained_model_beats_popularity(data, run):
    optimum = json.loads((data / "optimum.json").read_text())
    assert run[1]["recall@10"] > optimum["popularity"]["recall@10"]


def test_load_and_evaluate_reproduce_the_training_metrics(run, data):
    out, result = run
    model = specc.load(out)
    assert not model.training
    from specc.evaluation import evaluate, open_evaluation
    metrics = evaluate(model, open_evaluation(model, str(data / "valid.parquet"), default_schema()))
    assert metrics["ndcg@10"] == pytest.approx(result["ndcg@10"], abs=1e-9)
    proc = cli("evaluate", out, "--data", data / "valid.parquet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["recall@10"] == pytest.approx(result["recall@10"])
    assert "do not compare" not in proc.stderr
    other_protocol = cli("evaluate", out, "--data", data / "valid.parquet", "--exclude-seen")
    assert other_protocol.returncode == 0 and "were evaluated without --exclude-seen and these with it" in other_protocol.stderr


def test_recommend_writes_top_k_per_row(run, data, tmp_path):
    out, _ = run
    target = tmp_path / "recs.parquet"
    proc = cli("recommend", out, "--data", data / "valid.parquet", "--k", 5, "--out", target)
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(target).to_pydict()
    assert len(table["row"]) == 60 and all(len(ids) == 5 and 0 not in ids for ids in table["item_ids"])
    assert all(s == sorted(s, reverse=True) for s in table["scores"])
    jsonl = cli("recommend", out, "--data", data / "valid.parquet", "--k", 3)
    first = json.loads(jsonl.stdout.splitlines()[0])
    assert first["item_ids"] == table["item_ids"][0][:3]
    nested = tmp_path / "new" / "folder" / "recs.jsonl"   # folders are created
    assert cli("recommend", out, "--data", data / "valid.parquet", "--k", 2, "--out", nested).returncode == 0
    assert len(nested.read_text().splitlines()) == 60


def test_k_beyond_the_catalog(run, data, tmp_path):
    model = specc.load(run[0])
    catalog = model.plan.next_item.n_items - 1
    with pytest.raises(ValueError, match=f"between 1 and the catalog's {catalog} items"):
        model.recommend(model.random_batch(2), k=catalog + 1)
    proc = cli("recommend", run[0], "--data", data / "valid.parquet", "--k", catalog + 50, "--out",
               tmp_path / "all.jsonl")
    assert proc.returncode == 0 and f"returning all {catalog}" in proc.stderr
    first = json.loads((tmp_path / "all.jsonl").read_text().splitlines()[0])
    assert sorted(first["item_ids"]) == list(range(1, catalog + 1))
    unseen = cli("recommend", run[0], "--data", data / "valid.parquet", "--k", catalog, "--exclude-seen")
    for line in unseen.stdout.splitlines():   # fewer than k unseen items: no padding slots in the output
        rec = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the output"))
        assert 0 < len(rec["item_ids"]) < catalog and min(rec["item_ids"]) > 0
        assert len(rec["scores"]) == len(rec["item_ids"])


def test_exclude_seen_never_recommends_items_in_the_sequence(run, data):
    model = specc.load(run[0])
    batch = next(iter(pq.read_table(data / "valid.parquet").to_batches(max_chunksize=16)))
    items = batch.column("item_id-list").to_pylist()
    L = model.max_length
    padded = torch.tensor([(row[-L:] + [0] * L)[:L] for row in items])
    inputs = {"item_id-list": padded}
    _, ids = model.recommend(inputs, k=20, exclude_seen=True)
    for row, recs in zip(items, ids.tolist()):
        assert not set(row[-L:]) & set(recs)


def test_resume_after_an_interrupt_matches_an_uninterrupted_run(data, tmp_path):
    args = dict(eval_data=str(data / "valid.parquet"), epochs=2, progress=False)
    full = train(SPEC, str(data / "train.parquet"), str(tmp_path / "full"), log=quiet, **args)

    def interrupt_after_first_epoch(message):
        if message.startswith("epoch 1"):
            signal.raise_signal(signal.SIGINT)
    part = train(SPEC, str(data / "train.parquet"), str(tmp_path / "part"), log=interrupt_after_first_epoch, **args)
    assert part["interrupted"]
    state = json.loads(published(tmp_path / "part", "train_state.json").read_text())
    assert state["epoch"] == 1 and state["batch"] == 1
    resumed = train(SPEC, str(data / "train.parquet"), str(tmp_path / "part"), resume=True, log=quiet, **args)
    a, b = specc.load(tmp_path / "full").state_dict(), specc.load(tmp_path / "part").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert resumed["ndcg@10"] == full["ndcg@10"]


def test_training_is_deterministic_on_cpu(data, tmp_path):
    runs = [train(SPEC, str(data / "train.parquet"), str(tmp_path / str(i)), epochs=1, progress=False, log=quiet)
            for i in range(2)]
    assert runs[0]["loss"] == runs[1]["loss"]


def _write(path, **columns):
    pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize("case,needle", [
    ("missing_column", "item_id-list"),
    ("out_of_range", "outside"),
    ("float_ids", "item_id-list"),
    ("not_parquet", "parquet"),
    ("missing_path", "does not exist"),
])
def test_bad_data_gets_a_clear_error_and_writes_nothing(case, needle, tmp_path, data):
    bad = tmp_path / "bad.parquet"
    if case == "missing_column":
        _write(bad, other=pa.array([[1, 2]]))
    elif case == "out_of_range":
        _write(bad, **{"item_id-list": pa.array([[1, 2, 5000], [3, 4]])})
    elif case == "float_ids":
        _write(bad, **{"item_id-list": pa.array([[1.5, 2.0]])})
    elif case == "not_parquet":
        bad.write_text("id,items\n1,2\n")
    else:
        bad = tmp_path / "nowhere.parquet"
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({**SPEC, "schema": str(ROOT / "specs" / "schemas" / "ecommerce.pbtxt")}))
    proc = cli("train", spec_path, "--data", bad, "--out", tmp_path / "run", "--epochs", 1)
    assert proc.returncode == 1, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_nan_in_continuous_features_is_rejected(tmp_path):
    spec = json.loads(json.dumps(SPEC))
    spec["inputs"]["features"] = ["item_id-list", "price-list"]
    bad = tmp_path / "nan.parquet"
    _write(bad, **{"item_id-list": pa.array([[1, 2, 3]]), "price-list": pa.array([[0.1, np.nan, 0.2]])})
    with pytest.raises(specc.DataError, match="NaN"):
        train(spec, str(bad), str(tmp_path / "run"), schema=str(ROOT / "specs" / "schemas" / "ecommerce.pbtxt"),
              epochs=1, progress=False, log=quiet)


def test_an_existing_run_is_not_overwritten(run, data):
    proc = cli("train", ROOT / "specs" / "sasrec.json", "--data", data / "train.parquet", "--out", run[0])
    assert proc.returncode == 1 and "--resume" in proc.stderr


def test_loading_refuses_a_run_whose_spec_was_edited(run, tmp_path):
    import shutil
    copy = tmp_path / "edited"
    shutil.copytree(run[0], copy)
    spec = json.loads((copy / "spec.json").read_text())
    spec["body"]["n_layer"] = 2
    (copy / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(specc.UserError, match="saved plan"):
        specc.load(copy)


def test_resume_accepts_the_run_directory_as_its_value(run, data):
    proc = cli("train", run[0] / "spec.json", "--data", data / "train.parquet", "--resume", run[0], "--epochs", 2)
    assert proc.returncode == 0, proc.stderr   # already trained for 2 epochs: nothing left to do
    assert "already trained" in proc.stderr
    assert json.loads(proc.stdout)["ndcg@10"] == run[1]["ndcg@10"]
    other = cli("train", ROOT / "specs" / "sasrec.json", "--data", data / "train.parquet", "--resume", run[0])
    assert other.returncode == 1 and "another spec" in other.stderr
    assert cli("train", ROOT / "specs" / "sasrec.json", "--data", data / "train.parquet").returncode == 2


def test_diverging_training_stops_with_a_clear_error_and_leaves_nothing(data, tmp_path):
    spec = json.loads(json.dumps(SPEC))
    spec["training"].update(optimizer={"kind": "adam", "lr": 1e30}, clip_grad_norm=None)
    with pytest.raises(specc.UserError, match="training diverged; lower the learning rate") as info:
        train(spec, str(data / "train.parquet"), str(tmp_path / "run"), epochs=1, progress=False, log=quiet)
    assert "Nothing was saved" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_resume_continues_with_the_runs_own_settings(data, tmp_path):
    args = dict(eval_data=str(data / "valid.parquet"), progress=False)

    def interrupt_after_first_epoch(message):
        if message.startswith("epoch 1"):
            signal.raise_signal(signal.SIGINT)
    part = tmp_path / "part"
    train(SPEC, str(data / "train.parquet"), str(part), epochs=2, batch_size=64, log=interrupt_after_first_epoch,
          **args)
    for changed, flag in ((dict(batch_size=32), "--batch-size 64"), (dict(lr=0.5), "--lr 0.01"),
                          (dict(epochs=1), "--epochs 2")):
        with pytest.raises(specc.UserError, match=f"was trained with {flag}"):
            train(SPEC, str(data / "train.parquet"), str(part), resume=True, log=quiet, **changed, **args)
    other_data = tmp_path / "other.parquet"
    other_data.write_bytes((data / "train.parquet").read_bytes())
    with pytest.raises(specc.UserError, match="was trained with --data .*pass --data "):
        train(SPEC, str(other_data), str(part), resume=True, schema=str(data / "schema.pbtxt"), log=quiet, **args)
    done = train(SPEC, str(data / "train.parquet"), str(part), resume=True, log=quiet, **args)
    assert done["epochs"] == 2   # the run's own epochs, not the spec's 3


def test_resume_keeps_the_runs_validation_data_and_protocol(data, tmp_path):
    """A resumed run evaluates on its own validation data, with or without --exclude-seen as it began; asking for
    other data or another protocol is refused, so a selection is never made on the test split by mistake."""
    first = tmp_path / "first"
    start = train(SPEC, str(data / "train.parquet"), str(first), eval_data=str(data / "valid.parquet"), epochs=1,
                  exclude_seen=True, progress=False, log=quiet)
    assert start["exclude_seen"] is True
    test_split = tmp_path / "test.parquet"
    test_split.write_bytes((data / "valid.parquet").read_bytes())
    with pytest.raises(specc.UserError, match="was trained with --eval .*valid.parquet; resuming with --eval "
                                              ".*test.parquet"):
        train(SPEC, str(data / "train.parquet"), str(first), eval_data=str(test_split), resume=True, epochs=2,
              log=quiet)
    resumed = train(SPEC, str(data / "train.parquet"), str(first), resume=True, epochs=2, log=quiet)
    assert resumed["exclude_seen"] is True and "recall@10" in resumed
    unbroken = train(SPEC, str(data / "train.parquet"), str(tmp_path / "unbroken"), epochs=2, progress=False,
                     eval_data=str(data / "valid.parquet"), exclude_seen=True, log=quiet)
    assert resumed["recall@10"] == pytest.approx(unbroken["recall@10"])
    plain = tmp_path / "plain"
    train(SPEC, str(data / "train.parquet"), str(plain), eval_data=str(data / "valid.parquet"), epochs=1,
          progress=False, log=quiet)
    with pytest.raises(specc.UserError, match="was trained without --exclude-seen; resuming with --exclude-seen"):
        train(SPEC, str(data / "train.parquet"), str(plain), resume=True, epochs=2, exclude_seen=True, log=quiet)


def test_loading_refuses_nan_weights(run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file
    copy = tmp_path / "nan"
    shutil.copytree(run[0], copy)
    path = published(copy, "model.safetensors")
    weights = load_file(str(path))
    name = next(iter(weights))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(path), metadata={"format": "specc-1", "step": "14"})
    with pytest.raises(specc.UserError, match="does not match the checksum of the published checkpoint"):
        specc.load(copy)
    reseal(copy, "model.safetensors")
    with pytest.raises(specc.UserError, match="NaN or infinite weights"):
        specc.load(copy)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_a_clear_error(run, data):
    for command in ("evaluate", "recommend"):
        proc = cli(command, run[0], "--data", data / "valid.parquet", "--device", "cuda")
        assert proc.returncode == 1 and "no CUDA device" in proc.stderr, proc.stderr


def test_recommend_keeps_input_row_numbers_when_rows_have_no_items(run, data, tmp_path):
    table = pq.read_table(data / "valid.parquet").slice(0, 5)
    empty = {name: [[]] if pa.types.is_list(table.schema.field(name).type) else [table.column(name)[0].as_py()]
             for name in table.column_names}
    gapped = pa.concat_tables([table.slice(0, 2), pa.table(empty, schema=table.schema), table.slice(2, 3)])
    pq.write_table(gapped, tmp_path / "gapped.parquet")
    pq.write_table(table, tmp_path / "plain.parquet")
    got = cli("recommend", run[0], "--data", tmp_path / "gapped.parquet", "--k", 4, "--exclude-seen")
    want = cli("recommend", run[0], "--data", tmp_path / "plain.parquet", "--k", 4, "--exclude-seen")
    assert got.returncode == 0 and "1 of 6 row(s) have no items" in got.stderr
    got_lines = [json.loads(line) for line in got.stdout.splitlines()]
    want_lines = [json.loads(line) for line in want.stdout.splitlines()]
    assert [line["row"] for line in got_lines] == list(range(6))
    assert got_lines[2]["item_ids"] == [] and got_lines[2]["scores"] == []
    assert [line["item_ids"] for line in got_lines[:2] + got_lines[3:]] == [line["item_ids"] for line in want_lines]


def test_recommend_refuses_to_overwrite_its_input(run, data, tmp_path):
    target = tmp_path / "v.parquet"
    target.write_bytes((data / "valid.parquet").read_bytes())
    proc = cli("recommend", run[0], "--data", target, "--out", target)
    assert proc.returncode == 1 and "is the input data" in proc.stderr
    assert target.read_bytes() == (data / "valid.parquet").read_bytes()


def test_eval_every_evaluates_every_nth_and_the_last_epoch(data, tmp_path):
    result = train(SPEC, str(data / "train.parquet"), str(tmp_path / "run"), eval_data=str(data / "valid.parquet"),
                   epochs=3, eval_every=2, progress=False, log=quiet)
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert ["ndcg@10" in line for line in lines] == [False, True, True]
    assert result["ndcg@10"] == lines[-1]["ndcg@10"]


@pytest.mark.parametrize("damage, message", [
    ("plan_list", "must hold a JSON object"),
    ("weights_fp16", r"inputs.tables.0 is F16, the model's F32"),
    ("state_keys", r"damaged training state \(KeyError"),
    ("state_epoch", "epoch, batch and step must be counts"),
])
def test_damaged_run_files_are_refused_clearly(run, data, tmp_path, damage, message):
    import shutil

    from safetensors.torch import load_file, save_file
    copy = tmp_path / damage
    shutil.copytree(run[0], copy)
    if damage == "plan_list":
        (copy / "plan.json").write_text("[]")
    elif damage == "weights_fp16":
        weights = published(copy, "model.safetensors")
        save_file({k: v.half() for k, v in load_file(str(weights)).items()}, str(weights),
                  metadata={"format": "specc-1", "step": "14"})
        reseal(copy, "model.safetensors")
    else:
        state = json.loads(published(copy, "train_state.json").read_text())
        if damage == "state_keys":
            del state["scalars"]
        else:
            state["epoch"] = "one"
        published(copy, "train_state.json").write_text(json.dumps(state))
        reseal(copy, "train_state.json")
    with pytest.raises(specc.UserError, match=message):
        if damage.startswith("state"):
            train(SPEC, data / "train.parquet", copy, epochs=3, resume=True, progress=False, log=quiet)
        else:
            specc.load(copy)


def test_synth_does_not_replace_someone_else_s_data(tmp_path):
    synthesize(default_schema(), tmp_path / "ours", n_train=20, n_valid=5)
    synthesize(default_schema(), tmp_path / "ours", n_train=20, n_valid=5)    # its own output: rewritten
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "train.parquet").write_bytes(b"precious")
    with pytest.raises(specc.UserError, match="train.parquet that specc data synth did not write"):
        synthesize(default_schema(), tmp_path / "theirs", n_train=20, n_valid=5)
    assert (tmp_path / "theirs" / "train.parquet").read_bytes() == b"precious"


def _copy(run, tmp_path, name):
    import shutil
    copy = tmp_path / name
    shutil.copytree(run[0], copy)
    return copy


def test_tampered_run_files_are_clean_errors(run, tmp_path):
    """A 100k-deep spec.json and a string cardinality were internal errors."""
    deep = _copy(run, tmp_path, "deep")
    (deep / "spec.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(specc.UserError, match="nested too deeply"):
        specc.load(deep)
    card = _copy(run, tmp_path, "card")
    columns = json.loads((card / "columns.json").read_text())
    columns["columns"][0]["cardinality"] = "1000"
    (card / "columns.json").write_text(json.dumps(columns))
    with pytest.raises(specc.UserError, match="columns.json is damaged"):
        specc.load(card)
    proc = cli("evaluate", card, "--data", "x.parquet")
    assert proc.returncode == 1 and "internal" not in proc.stderr


def test_a_training_state_that_does_not_fit_the_run_is_refused(run, data, tmp_path):
    """A train_state.json with batch 10^9 was accepted."""
    copy = _copy(run, tmp_path, "batch")
    state = json.loads(published(copy, "train_state.json").read_text())
    state["batch"] = 10 ** 9
    published(copy, "train_state.json").write_text(json.dumps(state))
    args = dict(epochs=3, resume=True, progress=False, log=quiet)
    with pytest.raises(specc.UserError, match="does not match the checksum"):
        train(SPEC, str(data / "train.parquet"), str(copy), **args)
    reseal(copy, "train_state.json")
    with pytest.raises(specc.UserError, match="does not fit the data's 7 batches per epoch"):
        train(SPEC, str(data / "train.parquet"), str(copy), **args)
    state.update(batch=0, step=13)
    published(copy, "train_state.json").write_text(json.dumps(state))
    reseal(copy, "train_state.json")
    with pytest.raises(specc.UserError, match="state is of step 13, the weights of step 14"):
        train(SPEC, str(data / "train.parquet"), str(copy), **args)


def test_no_command_writes_into_a_run_directory_it_did_not_create(run, data):
    """`specc recommend RUN --out RUN/spec.json` overwrote the run's spec."""
    before = (run[0] / "spec.json").read_bytes()
    for target in (run[0] / "spec.json", run[0] / "sub" / "recs.parquet"):
        proc = cli("recommend", run[0], "--data", data / "valid.parquet", "--out", target)
        assert proc.returncode == 1 and "is inside the run directory" in proc.stderr, proc.stderr
    assert (run[0] / "spec.json").read_bytes() == before and not (run[0] / "sub").exists()
    for args in (["export", run[0], "--out", run[0] / "export"], ["data", "synth", "--out", run[0] / "d"],
                 ["train", run[0] / "spec.json", "--data", data / "train.parquet", "--out", run[0] / "nested"]):
        proc = cli(*args)
        assert proc.returncode == 1 and "is inside the run directory" in proc.stderr, (args, proc.stderr)
    assert sorted(p.name for p in run[0].iterdir()) == [".specc.lock", "checkpoint.json", "checkpoints",
                                                         "columns.json", "log.jsonl", "metrics.json", "plan.json",
                                                         "spec.json"]


@pytest.mark.parametrize("not_a_path", [3, None, ["runs/a"]])
def test_load_of_something_that_is_not_a_path_is_a_run_error(not_a_path):
    with pytest.raises(specc.UserError, match="a run directory is a path"):
        specc.load(not_a_path)
