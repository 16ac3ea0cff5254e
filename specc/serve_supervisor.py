"""tritonserver under `specc serve`: its workspace, its process, and restarts after a crash.

The workspace (a copy of nvidia-pytriton's tritonserver with the stub of this Python, the model repository and
the logs) is `$TMPDIR/specc-serve-<pid>.<start time>-*`; a folder whose owner is gone (killed with SIGKILL) is
removed at the next start, a live server's never. tritonserver listens on private loopback ports behind the
guard (`specc/serve_guard.py`), metrics on the public metrics port. When it or one of its Python-backend stubs
dies (Triton itself would keep a dead stub's model "ready" and answer 500), the supervisor logs why and the end
of tritonserver's log, marks the server not ready, and starts a new one; at a crash that makes more than
`RestartPolicy.max_restarts` within `RestartPolicy.window` seconds it gives up with a ServeError.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from specc.errors import UserError


class ServeError(UserError):
    """The server cannot start or keep running as asked (missing extra, bad run directory, port in use, ...)."""


_WORKSPACE = "specc-serve-"
_SHM = Path("/dev/shm")


# ---------------------------------------------------------------------- processes and folders we own

def _start_time(pid: int) -> str | None:
    """The kernel's start time of a live process (tells a reused pid apart), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in "ZX" else fields[19]


def make_workspace() -> Path:
    """A fresh workspace named after this process, after removing those of servers that are gone."""
    tmp = Path(tempfile.gettempdir())
    for folder in tmp.glob(_WORKSPACE + "*"):
        owner = folder.name[len(_WORKSPACE):].split("-", 1)[0]
        pid, _, started = owner.partition(".")
        if pid.isdigit() and started and _start_time(int(pid)) != started and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_WORKSPACE}{os.getpid()}.{_start_time(os.getpid())}-"))


def shm_prefix(pid: int | str) -> str:
    return f"specc-serve-{pid}-"


def remove_stale_shm_regions() -> None:
    """Shared-memory regions of the Python backend whose server is gone, and this server's own."""
    if not _SHM.is_dir():
        return
    for region in _SHM.glob(shm_prefix("*") + "*"):
        pid = region.name.split("-")[2]
        if (pid.isdigit() and not Path(f"/proc/{pid}").exists()) or pid == str(os.getpid()):
            region.unlink(missing_ok=True)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


# ---------------------------------------------------------------------- tritonserver

def copy_tritonserver(workspace: Path) -> Path:
    """nvidia-pytriton's tritonserver, with the Python-backend stub built for this interpreter's version."""
    try:
        from pytriton.utils.distribution import get_root_module_path, get_stub_path
    except ImportError:
        raise ServeError("specc serve needs the serve extra: pip install 'specc[serve]' "
                         "(nvidia-pytriton and tritonclient)") from None
    server = workspace / "tritonserver"
    shutil.copytree(get_root_module_path() / "tritonserver", server,
                    ignore=shutil.ignore_patterns("python_backend_stubs", "triton_python_backend_stub"))
    shutil.copy(get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}"),
                server / "backends" / "python" / "triton_python_backend_stub")
    return server


def _server_env() -> dict:
    """The environment of tritonserver and its stubs: this interpreter's LIBDIR first on LD_LIBRARY_PATH (the
    stub loads libpython by name), Triton's own libraries, this environment's Python, and specc importable."""
    from pytriton.utils.distribution import get_libs_path
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    libdir = sysconfig.get_config_var("LIBDIR")
    libs = [p for p in (libdir, str(get_libs_path()), *env.get("LD_LIBRARY_PATH", "").split(os.pathsep)) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(libs))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if `specc serve` dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import ctypes.util
    try:
        ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


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
                env=_server_env(), stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
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
            dead = [pid for pid, started in self.stubs.items() if _start_time(pid) != started]
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
        while (left := [p for p, t in self.stubs.items() if _start_time(p) == t]) and time.monotonic() < deadline:
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
