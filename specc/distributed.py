"""Rank, world size and device of this process, and the few collectives specc needs.

The only module that imports `torch.distributed`. Under `torchrun` (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT in the environment) `from_environment()` joins the process group: NCCL with one GPU per local rank on
CUDA, gloo on CPU. Without those variables it returns a single-process context that initialises nothing.

Every collective is bounded by `timeout_s`: a rank that died or hangs makes the others raise `DistributedError`
(a user-facing error naming this rank and the operation) instead of waiting forever.
"""
from __future__ import annotations

import os
import sys
import zlib
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Mapping

import torch

from specc.errors import UserError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT_S = 300.0


class DistributedError(UserError):
    """Another process of the run died, hung or disagreed; this one stops with the reason."""


class DistributedContext:
    """This process's place in the run. Built by `from_environment()`; single-process unless under torchrun."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, device: str = "cpu",
                 timeout_s: float = DEFAULT_TIMEOUT_S, group_started: bool = False, restarts: int = 0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device, self.timeout_s = device, timeout_s
        self._group_started, self._restarts = group_started, restarts

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints progress."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self._group_started

    @property
    def restart_count(self) -> int:
        """How often torchrun (--max-restarts) has restarted this run's processes: above 0, resume."""
        return self._restarts

    def __repr__(self) -> str:
        return f"DistributedContext(rank={self.rank}, world_size={self.world_size}, device={self.device!r})"

    def all_reduce_sum(self, values: Mapping[str, float]) -> dict[str, float]:
        """`values` (float sums and counts) summed over every rank, in float64; every rank must pass the same keys."""
        keys = sorted(values)
        if not self._group_started:
            return {k: float(values[k]) for k in keys}
        dist = _dist()
        fingerprint = float(zlib.crc32("\0".join(keys).encode()))
        check = torch.tensor([fingerprint, -fingerprint], dtype=torch.float64, device=self.device)
        self._run("all_reduce", dist.all_reduce, check, op=dist.ReduceOp.MAX)
        if check[0].item() != -check[1].item():
            raise DistributedError(f"rank {self.rank}: the ranks reduce different metric keys; every rank must "
                                   "evaluate the same tasks")
        total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        self._run("all_reduce", dist.all_reduce, total, op=dist.ReduceOp.SUM)
        return dict(zip(keys, total.cpu().tolist()))

    def all_gather_object(self, obj: Any) -> list:
        """`obj` of every rank, in rank order (picklable objects; for results too irregular to sum)."""
        if not self._group_started:
            return [obj]
        out: list = [None] * self.world_size
        self._run("all_gather_object", _dist().all_gather_object, out, obj)
        return out

    def gather_object(self, obj: Any, dst: int = 0) -> list | None:
        """`obj` of every rank, in rank order, on rank `dst`; None on the others."""
        if not self._group_started:
            return [obj]
        out = [None] * self.world_size if self.rank == dst else None
        self._run("gather_object", _dist().gather_object, obj, out, dst=dst)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (e.g. a stop asked of one process: all stop together)."""
        if not self._group_started:
            return bool(flag)
        dist = _dist()
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        self._run("all_reduce", dist.all_reduce, value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` as DistributedDataParallel (gradients averaged over ranks) in a distributed run; else itself."""
        if not self._group_started:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.local_rank] if self.device.startswith("cuda") else None
        # a task may leave some parameters without a gradient in a step (e.g. a binary loss on a batch without
        # targets), which DDP's reducer must be told to expect
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def broadcast_object(self, obj: Any = None, src: int = 0) -> Any:
        """Rank `src`'s `obj` on every rank."""
        if not self._group_started:
            return obj
        box = [obj if self.rank == src else None]
        self._run("broadcast_object", _dist().broadcast_object_list, box, src=src)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here (bounded by the timeout)."""
        if self._group_started:
            dist = _dist()
            # a barrier is an all-reduce of one element on the context's device (NCCL's barrier guesses the GPU)
            self._run("barrier", dist.all_reduce, torch.zeros(1, device=self.device))

    def close(self) -> None:
        """Leave the process group (idempotent)."""
        if self._group_started:
            self._group_started = False
            dist = _dist()
            if dist.is_initialized():
                dist.destroy_process_group()

    def __enter__(self) -> "DistributedContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def guard(self, what: str):
        """Inside, a failure of the process group (e.g. in DDP's gradient all-reduce during backward) raises
        DistributedError, with the same message as the context's own collectives."""
        if not self._group_started:
            yield
            return
        try:
            yield
        except RuntimeError as exc:   # DDP's all-reduce in backward surfaces a dead peer as a plain RuntimeError
            if isinstance(exc, _dist().DistError) or _names_the_transport(exc):
                raise self._lost(what, exc) from None
            raise

    def _run(self, what: str, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except (RuntimeError, ConnectionError, TimeoutError) as exc:   # DistBackendError is a RuntimeError
            raise self._lost(what, exc) from None

    def _lost(self, what: str, exc: BaseException) -> DistributedError:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return DistributedError(
            f"rank {self.rank} of {self.world_size}: {what} failed, so another process of the run has died, "
            f"hung for more than {self.timeout_s:g} s or stopped early; stopping too ({first})")


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return all(environ.get(name) for name in TORCHRUN_VARIABLES)


def from_environment(device: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                     environ: Mapping[str, str] | None = None) -> DistributedContext:
    """The context torchrun's environment describes, joining its process group; single-process without torchrun.

    `device` "cpu" uses gloo even where CUDA is available; otherwise CUDA, when present, means NCCL and GPU
    `LOCAL_RANK` for this process."""
    environ = os.environ if environ is None else environ
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if not launched_by_torchrun(environ):
        return DistributedContext(device=device or ("cuda" if use_cuda else "cpu"), timeout_s=timeout_s)
    try:
        rank, world_size, local_rank = (int(environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s): start "
                            "at most one process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(local_rank)
    backend, where = ("nccl", f"cuda:{local_rank}") if use_cuda else ("gloo", "cpu")
    restarts = int(environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    context = DistributedContext(rank, world_size, local_rank, where, timeout_s, group_started=True,
                                 restarts=restarts)
    timeout = timedelta(seconds=timeout_s)
    store = context._run("joining the process group", _round_store, rank, world_size, timeout)
    context._run("joining the process group", _dist().init_process_group, backend=backend, store=store,
                 rank=rank, world_size=world_size, timeout=timeout)
    return context


def _round_store(rank: int, world_size: int, timeout: timedelta):
    """torchrun's store (env://), under a prefix of its own for this start of the processes.

    After a restart (--max-restarts) torchrun hands the new processes the store the old ones used, keys and all
    (pytorch/pytorch#135712), so a process could read a dead peer's address and fail to connect. Every process
    counts itself in on arrival; the count says which start this is, alike on every process and node."""
    dist = _dist()
    store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=timeout))
    arrivals = store.add("specc/arrivals", 1)
    return dist.PrefixStore(f"specc/start-{(arrivals - 1) // world_size}", store)


def _names_the_transport(exc: BaseException) -> bool:
    text = str(exc)
    return any(mark in text for mark in ("gloo", "NCCL", "Connection closed by peer", "Connection reset by peer"))


def launch(nproc_per_node: int, specc_arguments: list[str]) -> int:
    """`specc ARGUMENTS` on `nproc_per_node` processes of this machine through torch.distributed.run (torchrun
    --standalone); returns the exit status: 0, or 1 when a process failed (it has printed why)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun
    try:
        torchrun(["--standalone", f"--nproc_per_node={nproc_per_node}", "-m", "specc", *specc_arguments])
    except ChildFailedError as exc:
        failed = ", ".join(f"rank {rank} (exit {f.exitcode})" for rank, f in sorted(exc.failures.items()))
        print(f"error: {failed} of {nproc_per_node} failed", file=sys.stderr)
        return 1
    except SignalException as exc:   # Ctrl-C or SIGTERM: torchrun has passed it on to every process
        print(f"stopped by signal {int(exc.sigval)}", file=sys.stderr)
        return 128 + int(exc.sigval)
    return 0


def _dist():
    import torch.distributed as dist
    return dist
