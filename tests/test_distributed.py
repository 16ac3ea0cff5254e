"""The distributed context on CPU (gloo, 2 processes): exact metric sums, shards, and a lost rank failing fast."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from specc.distributed import DistributedContext, from_environment
from specc.metrics import MetricAccumulator, all_reduce
from tests.helpers import descendants

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parent.parent
RANKING = {"ndcg": [3, 10], "recall": [10], "mrr": [10]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accumulators():
    return [MetricAccumulator(ranking=RANKING), MetricAccumulator(classification=["auc", "accuracy"], prefix="c"),
            MetricAccumulator(regression=["rmse", "mae"], prefix="r")]


def _feed(accumulators, rows: slice):
    """Fixed random evaluation results (the same on every process); each process feeds its rows."""
    g = torch.Generator().manual_seed(0)
    top = torch.randint(0, 20, (101, 10), generator=g)
    target = torch.randint(0, 20, (101,), generator=g)
    probs, labels = torch.rand(101, generator=g), torch.randint(0, 2, (101,), generator=g)
    pred, truth = torch.randn(101, generator=g), torch.randn(101, generator=g)
    for start in range(rows.start, rows.stop, 16):   # several batches per process
        part = slice(start, min(start + 16, rows.stop))
        accumulators[0].update_ranking(top[part], target[part])
        accumulators[1].update_classification(probs[part], labels[part])
        accumulators[2].update_regression(pred[part], truth[part])


def _metrics(accumulators) -> dict:
    return {k: v for acc in accumulators for k, v in acc.compute().items()}


def _worker(rank, world_size, port, job, args, results):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    try:
        context = from_environment(device="cpu", timeout_s=args.pop("timeout_s", 60))
        results.put((rank, "ok", globals()[job](context, **args)))
    except BaseException as exc:  # the parent asserts on what each rank saw
        results.put((rank, type(exc).__name__, f"{exc}\n{traceback.format_exc()}"))


def _run(job, world_size=2, wait_s=90, expect=None, **args) -> dict:
    """Run `job` on `world_size` spawned processes; {rank: (status, result or message)} of the first `expect`
    (default: all) ranks to report; the others are killed."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, job, dict(args), results))
             for r in range(world_size)]
    for p in procs:
        p.start()
    out, deadline = {}, time.monotonic() + wait_s
    try:
        while len(out) < (expect or world_size) and time.monotonic() < deadline:
            try:
                rank, status, value = results.get(timeout=1)
                out[rank] = (status, value)
            except Exception:  # queue.Empty: a rank that exited without a word is reported by its absence
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    return out


# --- jobs run in each process --------------------------------------------------------------------------------

def reduced_metrics(context, n_rows):
    accumulators = _accumulators()
    per = -(-n_rows // context.world_size)
    _feed(accumulators, slice(context.rank * per, min(n_rows, (context.rank + 1) * per)))
    all_reduce(accumulators, context)
    context.close()
    return _metrics(accumulators)


def shard_rows(context, path):
    from specc.data import open_dataset
    from specc.schema import Schema
    schema = Schema.from_columns([{"name": "item", "tags": ["item_id", "categorical", "list"], "is_list": True,
                                   "cardinality": 50}, {"name": "row", "tags": ["continuous"], "dtype": "float"}])
    ds = open_dataset(path, schema, ["item", "row"], item_column="item", max_length=4, rank=context.rank,
                      world_size=context.world_size, exchange=context.all_gather_object)
    rows = [b["row"].long().tolist() for b in ds.batches(3, shuffle=True, seed=7, epoch=1)]
    every = context.all_gather_object(rows)
    context.close()
    return every


def one_rank_leaves(context, hang):
    if context.rank == 1:
        if hang:
            time.sleep(60)
        os._exit(3)
    started = time.monotonic()
    context.all_reduce_sum({"loss": 1.0})
    return time.monotonic() - started


# --- tests ----------------------------------------------------------------------------------------------------

def test_without_torchrun_nothing_is_initialised():
    context = from_environment(device="cpu", environ={})
    assert (context.rank, context.world_size, context.is_main, context.is_distributed) == (0, 1, True, False)
    assert context.all_reduce_sum({"b": 2, "a": 1.5}) == {"a": 1.5, "b": 2.0}
    assert context.broadcast_object({"x": 1}) == {"x": 1} and context.all_gather_object(3) == [3]
    context.barrier()
    context.close()
    assert not torch.distributed.is_initialized()


def test_single_process_all_reduce_leaves_metrics_alone():
    accumulators = _accumulators()
    _feed(accumulators, slice(0, 101))
    before = _metrics(accumulators)
    all_reduce(accumulators, DistributedContext())
    assert _metrics(accumulators) == before


@pytest.mark.slow
def test_two_ranks_reduce_to_the_single_process_metrics():
    accumulators = _accumulators()
    _feed(accumulators, slice(0, 101))
    want = _metrics(accumulators)
    got = _run("reduced_metrics", n_rows=101)
    assert set(got) == {0, 1} and all(status == "ok" for status, _ in got.values()), got
    for rank in (0, 1):
        metrics = got[rank][1]
        assert metrics.keys() == want.keys()
        for k, v in want.items():
            assert abs(metrics[k] - v) <= 1e-6, (rank, k, metrics[k], v)


@pytest.mark.slow
def test_two_ranks_read_disjoint_shards_covering_every_row(tmp_path):
    n = 23
    items = [[1 + i % 9] * (1 + i % 3) if i % 5 else [] for i in range(n)]     # every fifth row is skipped
    table = pa.table({"item": pa.array(items, pa.list_(pa.int64())), "row": pa.array(np.arange(n, dtype=float))})
    pq.write_table(table, tmp_path / "one_group.parquet")                      # a single row group
    got = _run("shard_rows", path=str(tmp_path / "one_group.parquet"))
    assert all(status == "ok" for status, _ in got.values()), got
    every = got[0][1]
    assert every == got[1][1] and len(every[0]) == len(every[1])                 # equal step counts
    seen = [r for rank in every for batch in rank for r in batch]
    assert sorted(seen) == [i for i in range(n) if i % 5]                         # each usable row once
    assert not set(r for b in every[0] for r in b) & set(r for b in every[1] for r in b)


@pytest.mark.slow
@pytest.mark.parametrize("hang", [False, True], ids=["exits", "hangs"])
def test_a_lost_rank_makes_the_other_fail_fast(hang):
    started = time.monotonic()
    got = _run("one_rank_leaves", hang=hang, timeout_s=5, wait_s=60, expect=1)
    assert 1 not in got                                                           # it left without a word
    status, message = got[0]
    assert status == "DistributedError", message
    assert "rank 0 of 2: all_reduce failed" in message and "another process of the run" in message
    assert time.monotonic() - started < 45


def _specc(*args, launcher=("-m", "specc")):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return subprocess.run([sys.executable, *launcher, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.slow
def test_two_process_training_writes_one_run_that_evaluates_alike_on_one_or_two_processes(tmp_path):
    spec, data = _small_run_files(tmp_path, n_train=400, n_valid=60, seed=3)
    valid, run = tmp_path / "data" / "valid.parquet", tmp_path / "run"
    done = _specc("train", spec, "--data", data, "--eval", valid, "--out", run, "--epochs", 2,
                  "--batch-size", 64, "--device", "cpu", "--quiet", "--nproc-per-node", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)                     # one result printed, by rank 0 alone
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train_sessions"] == 400 and printed == metrics
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(line["epoch"], line["world_size"]) for line in lines] == [(1, 2), (2, 2)]   # one writer
    single = _specc("evaluate", run, "--data", valid, "--device", "cpu")
    assert single.returncode == 0, single.stderr[-3000:]
    double = _specc("--standalone", "--nproc_per_node", 2, "-m", "specc", "evaluate", run, "--data", valid,
                    "--device", "cpu", launcher=("-m", "torch.distributed.run"))
    assert double.returncode == 0, double.stderr[-3000:]
    plain = json.loads(single.stdout)
    for evaluated in (plain, json.loads(double.stdout)):
        for key in ("ndcg@10", "recall@10", "recall@20", "mrr@10"):
            assert abs(evaluated[key] - metrics[key]) <= 1e-4, (key, evaluated[key], metrics[key])
    # with each row's whole history excluded, the shares still add up to the single process's metrics
    single = _specc("evaluate", run, "--data", valid, "--device", "cpu", "--exclude-seen")
    double = _specc("--standalone", "--nproc_per_node", 2, "-m", "specc", "evaluate", run, "--data", valid,
                    "--device", "cpu", "--exclude-seen", launcher=("-m", "torch.distributed.run"))
    assert single.returncode == 0 and double.returncode == 0, (single.stderr + double.stderr)[-3000:]
    one, two = json.loads(single.stdout), json.loads(double.stdout)
    assert any(one[k] != plain[k] for k in ("ndcg@10", "recall@20", "mrr@10"))   # the exclusion changed the ranking
    for key in ("ndcg@10", "recall@10", "recall@20", "mrr@10"):
        assert abs(one[key] - two[key]) <= 1e-4, (key, one[key], two[key])


def _small_run_files(tmp_path, n_train: int = 200, n_valid: int = 40, seed: int = 4):
    """A small SASRec spec and synthetic data for it: (spec path, training data path)."""
    from specc.synth import default_schema, synthesize
    synthesize(default_schema(), tmp_path / "data", n_train=n_train, n_valid=n_valid, seed=seed)
    spec = json.loads((ROOT / "specs" / "sasrec.json").read_text())
    spec.pop("schema")
    spec["body"].update(d_model=16, n_layer=1)
    spec["inputs"]["embeddings"]["default_dim"] = 16
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return tmp_path / "spec.json", tmp_path / "data" / "train.parquet"


@pytest.mark.slow
def test_resume_on_two_processes_and_the_world_size_changes_allowed(tmp_path):
    from specc.checkpoint import RunError
    from specc.train import train
    spec, data = _small_run_files(tmp_path)
    run = tmp_path / "run"
    for epochs, resume in ((1, []), (2, ["--resume"])):
        done = _specc("train", spec, "--data", data, "--out", run, "--epochs", epochs, "--batch-size", 32,
                      "--device", "cpu", "--quiet", "--nproc-per-node", 2, *resume)
        assert done.returncode == 0, done.stderr[-3000:]
    # at an epoch's end, any number of processes continues the run
    train(str(spec), str(data), str(run), epochs=3, resume=True, device="cpu", progress=False, log=lambda m: None)
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(line["epoch"], line["world_size"]) for line in lines] == [(1, 2), (2, 2), (3, 1)]
    assert lines[1]["step"] == 2 * lines[0]["step"]                # no step lost or repeated
    # inside an epoch, only as many as it had: the shares of the epoch depend on them
    pointer = json.loads((run / "checkpoint.json").read_text())
    meta = run / pointer["checkpoint"] / "train_state.json"
    state = json.loads(meta.read_text())
    state.update(batch=1, settings={**state["settings"], "world_size": 2})
    meta.write_text(json.dumps(state))
    from specc.checkpoint import sha256_file
    pointer["sha256"]["train_state.json"] = sha256_file(meta)
    (run / "checkpoint.json").write_text(json.dumps(pointer))
    with pytest.raises(RunError, match="stopped inside an epoch on 2 process"):
        train(str(spec), str(data), str(run), epochs=4, resume=True, device="cpu", progress=False,
              log=lambda m: None)


def test_the_global_batch_must_divide_over_the_processes():
    from specc.errors import SpecError, UserError
    from specc.train import _per_process_batch
    assert _per_process_batch(96, 3, from_spec=True) == 32
    with pytest.raises(SpecError) as e:
        _per_process_batch(100, 3, from_spec=True)
    assert e.value.issues[0].path == "$.training.batch_size" and "multiple of 3, e.g. 99" in e.value.issues[0].hint
    with pytest.raises(UserError, match="--batch-size: batch size 7 does not divide evenly over 2 processes"):
        _per_process_batch(7, 2, from_spec=False)


def _descendant_with_rank(parent: int, rank: int) -> int | None:
    """The pid of a process under `parent` whose environment says RANK=`rank` (a torchrun worker)."""
    for pid in sorted(descendants(parent)):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"\0RANK={rank}\0".encode() in b"\0" + f.read():
                    return pid
        except OSError:
            pass
    return None


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker through /proc")
def test_a_killed_rank_stops_a_torchrun_training_fast_with_a_clear_message(tmp_path):
    import signal
    spec, data = _small_run_files(tmp_path)
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    training = subprocess.Popen([sys.executable, "-m", "specc", "train", str(spec), "--data", str(data), "--out",
                                 str(run), "--epochs", "500", "--batch-size", "16", "--device", "cpu", "--quiet",
                                 "--nproc-per-node", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        deadline = time.monotonic() + 180
        while not (run / "log.jsonl").is_file() and time.monotonic() < deadline and training.poll() is None:
            time.sleep(0.5)                                       # an epoch done: both ranks are training
        victim = _descendant_with_rank(training.pid, 1)
        assert victim is not None and training.poll() is None, training.stderr.read()[-2000:]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _, err = training.communicate(timeout=120)
    finally:
        if training.poll() is None:
            training.kill()
    assert training.returncode == 1 and time.monotonic() - killed < 60
    assert "rank 1 (exit -9)" in err and "of 2 failed" in err, err[-2000:]


@pytest.mark.slow
def test_max_time_stops_every_process_after_the_same_step_and_resume_continues(tmp_path):
    spec, data = _small_run_files(tmp_path)
    valid, run = tmp_path / "data" / "valid.parquet", tmp_path / "run"
    steps = []
    for resume in ([], ["--resume"]):
        done = _specc("train", spec, "--data", data, "--eval", valid, "--out", run, "--epochs", 500,
                      "--batch-size", 16, "--device", "cpu", "--quiet", "--nproc-per-node", 2, "--max-time", "4s",
                      *resume)
        assert done.returncode == 0, done.stderr[-3000:]   # the processes agreed: a disagreement would hang
        metrics = json.loads((run / "metrics.json").read_text())
        assert (metrics["stopped"], metrics["world_size"], metrics["interrupted"]) == ("max_time", 2, False)
        assert "ndcg@10" in metrics and "stopped at --max-time" in done.stderr
        pointer = json.loads((run / "checkpoint.json").read_text())
        steps.append(pointer["step"])
        assert pointer["step"] == pointer["epoch"] * 13 + pointer["batch"]   # 100 rows and 8 per step on each
    assert steps[1] > steps[0] > 0
