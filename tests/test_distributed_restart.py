"""torchrun's own recovery: `--max-restarts` after a killed rank restarts every worker, and specc resumes the run from
its last published checkpoint, losing and repeating no step."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_distributed import ROOT, _descendant_with_rank, _small_run_files


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def _torchrun_train(spec, data, valid, run, epochs: int, max_restarts: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "--max-restarts", str(max_restarts), "-m", "specc", "train", str(spec), "--data",
                             str(data), "--eval", str(valid), "--out", str(run), "--epochs", str(epochs),
                             "--batch-size", "16", "--device", "cpu", "--quiet"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _epochs(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker through /proc")
def test_torchrun_max_restarts_after_a_killed_rank_resumes_from_the_last_checkpoint(tmp_path):
    spec, data = _small_run_files(tmp_path, n_train=400, n_valid=40)
    valid, epochs = tmp_path / "data" / "valid.parquet", 6
    whole = _torchrun_train(spec, data, valid, tmp_path / "whole", epochs, max_restarts=0)
    out, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err[-3000:]

    run = tmp_path / "run"
    training = _torchrun_train(spec, data, valid, run, epochs, max_restarts=1)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and training.poll() is None and not (
                (run / "log.jsonl").is_file() and _epochs(run)):
            time.sleep(0.1)                       # epoch 1 is logged, so its checkpoint is published
        victim = _descendant_with_rank(training.pid, 1)
        assert victim is not None and training.poll() is None, "training ended before a rank could be killed"
        os.kill(victim, signal.SIGKILL)
        out, err = training.communicate(timeout=600)
    finally:
        if training.poll() is None:
            training.kill()
    assert training.returncode == 0, err[-3000:]
    assert "resuming" in err or "finishing epoch" in err, err[-3000:]   # the restarted workers resumed
    assert "internal error" not in err and "another process of the run has died" in err   # the survivor said why
    assert "keeps its last checkpoint: once every process can run, continue with the same command and --resume" \
        in err
    lines, reference = _epochs(run), _epochs(tmp_path / "whole")
    # every epoch logged once, at the step an uninterrupted run reaches it, with its loss and metrics
    assert [(r["epoch"], r["step"]) for r in lines] == [(r["epoch"], r["step"]) for r in reference]
    for got, want in zip(lines, reference):
        for key in ("loss", "recall@10", "ndcg@10"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), (got["epoch"], key)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == epochs and metrics["interrupted"] is False and metrics["world_size"] == 2


def test_a_dead_peer_inside_the_training_guard_is_a_distributed_error_and_other_errors_pass():
    from specc.distributed import DistributedContext, DistributedError
    context = DistributedContext(rank=1, world_size=2, group_started=True)
    peer = "[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:46315"
    with pytest.raises(DistributedError, match="rank 1 of 2: training failed, so another process"):
        with context.guard("training"):
            raise RuntimeError(peer)
    with pytest.raises(RuntimeError, match="shapes do not match"):
        with context.guard("training"):
            raise RuntimeError("shapes do not match")
