"""Fault injection: `kill -9` at each phase of a run, a full disk, two writers at once. After each, resuming ends
exactly where an uninterrupted run ends, or specc refuses clearly; never a silently different model.

Each case runs the command line in a child process (tests/fault_driver.py kills it at the chosen point)."""
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import specc
from specc.synth import default_schema, synthesize

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "fault_driver.py"
SPEC = json.loads((ROOT / "specs" / "sasrec.json").read_text())
SPEC.pop("schema")
SPEC["body"].update(d_model=16, n_layer=1, n_head=2)
SPEC["inputs"]["embeddings"]["default_dim"] = 16
# a constant rate, so that extending a finished run equals training it that long (the disk-full case)
SPEC["training"] = {"batch_size": 32, "epochs": 2, "checkpoint_every": 2, "schedule": "constant", "warmup": 0.0}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    synthesize(default_schema(), folder, n_train=128, n_valid=32, seed=5)
    (folder / "spec.json").write_text(json.dumps(SPEC))
    return folder


def specc_run(fault, *args, file_limit=None, **popen):
    command = [sys.executable, str(DRIVER), fault, *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))) if file_limit else None
    if popen.pop("background", False):
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, preexec_fn=limit, timeout=600, **popen)


def train_args(files, out, *extra):
    return ["train", files / "spec.json", "--data", files / "train.parquet", "--eval", files / "valid.parquet",
            "--out", out, "--quiet", *extra]


@pytest.fixture(scope="module")
def reference(files):
    out = files / "reference"
    done = specc_run("none", *train_args(files, out))
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [4, 8]   # 4 steps per epoch: checkpoints at steps 2, 4 (epoch 1), 6 and 8 (epoch 2)
    return out


def assert_same_run(run, reference, checkpoints=1):
    got, want = specc.load(run).state_dict(), specc.load(reference).state_dict()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (run, reference)]
    assert {k: v for k, v in metrics[0].items() if "@" in k} == {k: v for k, v in metrics[1].items() if "@" in k}
    assert metrics[0]["interrupted"] is False and metrics[0]["epochs"] == 2
    logs = [[json.loads(line) for line in (r / "log.jsonl").read_text().splitlines()] for r in (run, reference)]
    assert [(r["epoch"], r["step"], r["loss"], r["ndcg@10"]) for r in logs[0]] == \
        [(r["epoch"], r["step"], r["loss"], r["ndcg@10"]) for r in logs[1]]   # losses over every batch of an epoch
    assert not [p for p in run.rglob("*") if ".tmp" in p.name], "leftovers of the killed writer"
    assert len(list((run / "checkpoints").iterdir())) == checkpoints


def killed(proc):
    assert proc.returncode == -9, proc.stderr


def resumed(files, out, *extra):
    proc = specc_run("none", *train_args(files, out, "--resume", *extra))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def test_kill_during_data_validation_leaves_a_reusable_folder(files, reference, tmp_path):
    out = tmp_path / "run"
    killed(specc_run("validation", *train_args(files, out)))
    refused = specc_run("none", *train_args(files, out, "--resume"))
    assert refused.returncode == 1 and "nothing to resume" in refused.stderr and "can be reused" in refused.stderr
    again = specc_run("none", *train_args(files, out))
    assert again.returncode == 0, again.stderr
    assert_same_run(out, reference)


def test_kill_mid_epoch_loses_at_most_checkpoint_every_steps(files, reference, tmp_path):
    out = tmp_path / "run"
    killed(specc_run("step:7", *train_args(files, out)))
    pointer = json.loads((out / "checkpoint.json").read_text())
    assert pointer["step"] == 6 and (pointer["epoch"], pointer["batch"]) == (1, 2)
    assert "at epoch 2, batch 3 (step 6)" in resumed(files, out).stderr
    assert_same_run(out, reference)


@pytest.mark.parametrize("phase", ["state", "publish"])
def test_kill_inside_a_checkpoint_write_resumes_from_the_one_before(files, reference, tmp_path, phase):
    out = tmp_path / "run"
    killed(specc_run(f"save:{phase}:3", *train_args(files, out)))   # the third checkpoint is step 6's
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 4
    assert any(".tmp" in p.name or p.name == "step-000000006" for p in (out / "checkpoints").iterdir())
    loaded = specc.load(out)   # readers see the published checkpoint, whole
    assert loaded is not None
    resumed(files, out)
    assert_same_run(out, reference)


def test_kill_during_the_final_evaluation_is_finished_by_resume(files, reference, tmp_path):
    out = tmp_path / "run"
    killed(specc_run("evaluation:2", *train_args(files, out)))
    assert not (out / "metrics.json").exists() or json.loads((out / "metrics.json").read_text())["interrupted"]
    proc = resumed(files, out)
    assert "finishing epoch 2" in proc.stderr
    assert json.loads(proc.stdout)["ndcg@10"] == json.loads((reference / "metrics.json").read_text())["ndcg@10"]
    assert_same_run(out, reference)
    again = resumed(files, out)   # now there is nothing left to do
    assert "already trained" in again.stderr and json.loads(again.stdout)["interrupted"] is False


def test_full_disk_at_the_first_checkpoint_is_a_clean_error_and_the_folder_is_reusable(files, reference, tmp_path):
    out = tmp_path / "run"
    full = specc_run("none", *train_args(files, out), file_limit=16 << 10)   # the weights need more than 16 KiB
    assert full.returncode == 1, full.stderr
    assert "cannot write the checkpoint of step 2" in full.stderr and "File too large" in full.stderr
    assert "nothing was saved" in full.stderr and "Traceback" not in full.stderr and "internal" not in full.stderr
    assert not out.exists()   # nothing was published: what the run wrote, and the folder it created, are gone
    again = specc_run("none", *train_args(files, out))
    assert again.returncode == 0, again.stderr
    assert_same_run(out, reference)


def test_full_disk_later_keeps_the_last_checkpoint_resumable(files, reference, tmp_path):
    out = tmp_path / "run"
    first = specc_run("none", *train_args(files, out, "--epochs", 1))
    assert first.returncode == 0, first.stderr
    full = specc_run("none", *train_args(files, out, "--resume", "--epochs", 2), file_limit=16 << 10)
    assert full.returncode == 1 and "the checkpoint of step 4 is intact" in full.stderr, full.stderr
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 4
    resumed(files, out, "--epochs", 2)
    assert_same_run(out, reference)


def test_a_second_writer_fails_at_once_naming_the_first_and_a_dead_ones_lock_is_taken_over(files, reference,
                                                                                           tmp_path):
    out, ready = tmp_path / "run", tmp_path / "ready"
    first = specc_run(f"hold:{ready}", *train_args(files, out), background=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first writer did not start"
            time.sleep(0.2)
        for extra in ((), ("--resume",)):
            started = time.monotonic()
            second = specc_run("none", *train_args(files, out, *extra))
            assert second.returncode == 1, second.stderr
            assert f"is being written by pid {first.pid} on " in second.stderr
            assert time.monotonic() - started < 30   # at once: no waiting for the lock
    finally:
        first.kill()
        first.wait()
    taken = specc_run("none", *train_args(files, out))
    assert taken.returncode == 0, taken.stderr
    assert f"took over the lock of {out} left by pid {first.pid}" in taken.stderr
    assert_same_run(out, reference)


# the first epoch stays the best (no later one beats it by a whole unit) and the run trains both epochs
FIRST_IS_BEST = {**SPEC, "training": {**SPEC["training"], "early_stopping": {"metric": "ndcg@10", "patience": 5,
                                                                              "min_delta": 1.0}}}


@pytest.fixture(scope="module")
def keeping_best(files):
    (files / "best_spec.json").write_text(json.dumps(FIRST_IS_BEST))
    out = files / "keeping_best"
    done = specc_run("none", *best_args(files, out))
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "best.json").read_text())["step"] == 4
    return out


def best_args(files, out, *extra):
    return ["train", files / "best_spec.json", *train_args(files, out, *extra)[2:]]


@pytest.mark.parametrize("fault", ["best:1", "step:7"])
def test_a_kill_while_keeping_the_best_leaves_both_pointers_whole_and_resume_keeps_the_same_best(
        files, keeping_best, tmp_path, fault):
    out = tmp_path / "run"
    killed(specc_run(fault, *best_args(files, out)))
    latest, best = json.loads((out / "checkpoint.json").read_text()), out / "best.json"
    if fault == "best:1":   # epoch 1 evaluated and logged, its checkpoint published; best.json not written
        assert latest["step"] == 4 and not best.exists()
    else:                   # best.json names epoch 1's checkpoint, kept beside step 6's
        assert latest["step"] == 6 and json.loads(best.read_text())["step"] == 4
        assert len(list((out / "checkpoints").iterdir())) == 2
    assert specc.load(out) is not None   # readers load whichever pointer is there, whole
    proc = specc_run("none", *best_args(files, out, "--resume"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "best.json").read_text())["step"] == 4
    assert_same_run(out, keeping_best, checkpoints=2)
    assert json.loads((out / "metrics.json").read_text())["kept_epoch"] == 1
