"""The distributed context on CPU (gloo, 2 processes): exact metric sums, shards, and a lost rank failing fast."""
import multiprocessing
import os
import socket
import time
import traceback

import numpy as np
import pytest
import torch

from specc.distributed import DistributedContext, DistributedError, from_environment
from specc.metrics import MetricAccumulator, all_reduce

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

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
                      world_size=context.world_size)
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
