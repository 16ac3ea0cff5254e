"""tritonserver under `specc serve`: started, watched, and restarted after a crash.

tritonserver listens on private loopback ports behind the guard (`specc/serve_guard.py`), metrics on the
public metrics port. When it or one of its Python-backend stubs dies (Triton itself would keep a dead stub's
model "ready" and answer 500), the supervisor logs why and the end of tritonserver's log, marks the server not
ready, and starts a new one; at a crash that makes more than `RestartPolicy.max_restarts` within
`RestartPolicy.window` seconds it gives up with a ServeError.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from specc.serve_workspace import (ServeError, copy_tritonserver, free_port, remove_stale_shm_regions, server_env,
                                   shm_prefix, start_time, tritonserver_child_setup)

def _stubs(pid: int) -> dict[int, str]:
    """The Python-backend stubs that tritonserver `pid` started, with their start times."""
    stubs = {}
    for entry in os.listdir("/proc"):
        try:
            name, rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue
        fields = rest.split()
        if fields[1] == str(pid) and name.endswith("(triton_python_b"):
            stubs[int(entry)] = fields[19]
    return stubs


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} ({code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5        # crashes tolerated within the window; one more and `specc serve` gives up
    window: float = 300.0        # seconds

    def count(self, crashes: deque, now: float) -> int:
        """Record a crash at `now` (monotonic seconds) in `crashes`; how many lie within the window."""
        crashes.append(now)
        while crashes[0] < now - self.window:
            crashes.popleft()
        return len(crashes)


class Supervisor:
    """Starts tritonserver, waits until it and its models are ready, watches it and its stubs, restarts it."""

    def __init__(self, workspace: Path, host: str, metrics_port: int, stop: dict, log_fn, ready_timeout: float,
                 policy: RestartPolicy):
        self.server = copy_tritonserver(workspace)   # first: a ServeError if the serve extra is missing
        from specc.serve_guard import Upstream
        self.workspace, self.host, self.upstream, self.models = workspace, host, Upstream(), []
        self.metrics_port, self.stop, self.log_fn = metrics_port, stop, log_fn
        self.ready_timeout, self.policy = ready_timeout, policy
        self.proc: subprocess.Popen | None = None
        self.stubs: dict[int, str] = {}   # pid -> start time
        self.crashes: deque = deque()
        self.start_failure: str | None = None
        self.starts = 0

    def run(self, models: list[str], serving: str) -> None:
        """Serve `models` until a stop signal (blocks), logging `serving` once ready; ServeError if the first
        start fails or the crashes exceed the policy."""
        self.models = models
        self._start()   # a first start that fails is a problem of the run or the machine: no retry
        if self.stop["signal"] is not None:
            return
        self._log(serving)
        while (problem := self._watch()) is not None:
            self.upstream.ready = False
            self._count(problem)
            self._reap()
            try:
                self._start()
            except ServeError as exc:
                self.start_failure = f"did not start again ({exc})"
                continue
            if self.stop["signal"] is None:
                self._log(f"tritonserver restarted (pid {self.proc.pid}); serving again")

    def close(self) -> None:
        self.upstream.ready = False
        self._reap()
        remove_stale_shm_regions()

    # --- one tritonserver
    def _start(self) -> None:
        self.starts += 1
        http, grpc = free_port("127.0.0.1"), free_port("127.0.0.1")
        self.log_path = self.workspace / f"tritonserver-{self.starts}.log"
        s = self.server
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                [str(s / "bin" / "tritonserver"), "--model-repository", str(self.workspace / "models"),
                 "--backend-directory", str(s / "backends"), "--http-address", "127.0.0.1", "--http-port", str(http),
                 "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc), "--metrics-address", self.host,
                 "--metrics-port", str(self.metrics_port), "--allow-metrics", "true", "--strict-readiness", "true",
                 "--exit-timeout-secs", "5", "--log-verbose", "0",
                 "--backend-config", f"python,shm-region-prefix-name={shm_prefix(os.getpid())}"],
                env=server_env(), stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=tritonserver_child_setup)
        self._wait_ready(f"127.0.0.1:{http}")
        self.stubs = _stubs(self.proc.pid)
        self.upstream.http, self.upstream.grpc = f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        self.upstream.ready = self.stop["signal"] is None

    def _wait_ready(self, address: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        urls = [f"http://{address}/v2/health/ready"] + [f"http://{address}/v2/models/{m}/ready" for m in self.models]
        while self.stop["signal"] is None:
            if self.proc.poll() is not None:
                raise ServeError(f"tritonserver stopped while starting ({_exit_reason(self.proc.returncode)}):\n"
                                 f"{_tail(self.log_path)}")
            if all(_http_ok(u) for u in urls):
                return
            if time.monotonic() > deadline:
                raise ServeError(f"tritonserver was not ready after {self.ready_timeout:.0f} s:\n"
                                 f"{_tail(self.log_path)}")
            time.sleep(0.2)

    def _watch(self) -> str | None:
        """Blocks until a stop signal (None) or a crash (what happened)."""
        if self.start_failure:
            problem, self.start_failure = self.start_failure, None
            return problem
        while self.stop["signal"] is None:
            if self.proc.poll() is not None:
                return f"exited ({_exit_reason(self.proc.returncode)})"
            dead = [pid for pid, started in self.stubs.items() if start_time(pid) != started]
            if dead:
                return f"lost a Python-backend stub (pid {dead[0]}); Triton does not restart stubs"
            time.sleep(0.2)
        return None

    def _count(self, problem: str) -> None:
        recent = self.policy.count(self.crashes, time.monotonic())
        self._log(f"tritonserver {problem}; the end of its log:\n{_tail(self.log_path, 20)}")
        if recent > self.policy.max_restarts:
            raise ServeError(f"giving up: {recent} tritonserver crash(es) within {self.policy.window:.0f} s, more "
                             f"than --max-restarts {self.policy.max_restarts} allows (last: {problem})")
        self._log(f"restarting tritonserver ({recent} of at most {self.policy.max_restarts} restarts within "
                  f"{self.policy.window:.0f} s); health reports not ready until it is back")

    def _reap(self) -> None:
        """Stop what is left of the current tritonserver and its stubs, so their ports and memory are free."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()   # tritonserver stops its stubs
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 5   # orphaned stubs exit within a second (they watch their parent)
        while (left := [p for p, t in self.stubs.items() if start_time(p) == t]) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        remove_stale_shm_regions()

    def _log(self, message: str) -> None:
        self.log_fn(message)
        sys.stdout.flush()
