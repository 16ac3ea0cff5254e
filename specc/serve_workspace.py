"""What `specc serve` owns on the machine: its workspace, ports, shared memory, and tritonserver's files.

The workspace (a copy of nvidia-pytriton's tritonserver with the stub of this Python, the model repository and
the logs, ~23 MB) is `$TMPDIR/specc-serve-<pid>.<start time>-*`; a folder whose owner is gone (killed with
SIGKILL) is removed at the next start, a live server's never (the start time tells a reused pid apart).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
from pathlib import Path

from specc.errors import UserError


class ServeError(UserError):
    """The server cannot start or keep running as asked (missing extra, bad run directory, port in use, ...)."""


_WORKSPACE = "specc-serve-"
_SHM = Path("/dev/shm")


def start_time(pid: int) -> str | None:
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
        if pid.isdigit() and started and start_time(int(pid)) != started and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_WORKSPACE}{os.getpid()}.{start_time(os.getpid())}-"))


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


def server_env() -> dict:
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


def tritonserver_child_setup() -> None:
    """In the child: receive SIGTERM if `specc serve` dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import ctypes.util
    try:
        ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
