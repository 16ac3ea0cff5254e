"""One writer per run directory: RUN_DIR/.specc.lock, held with flock(2), naming its owner (pid, host, start).

The kernel releases a flock when its process ends, however it ends (kill -9 included), so a lock left by a dead
process is never in the way: the next writer takes it over and says whose it was."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from specc.errors import UserError
from specc.files import UnreadableFile, parse_json, read_text

LOCK_NAME = ".specc.lock"


class RunLocked(UserError):
    """Another process is writing the run directory."""


class RunLock:
    def __init__(self, folder: Path):
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> dict | None:
        """Take the lock or raise RunLocked naming its owner; returns the owner of a stale lock taken over."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"{self.path.parent} is being written by {describe(self.owner())}; wait for it to "
                            "finish, stop it, or choose another --out") from None
        except OSError as exc:
            os.close(fd)
            raise RunLocked(f"cannot lock {self.path} ({exc.strerror}); specc needs a file system with flock(2) "
                            "for its run directories") from None
        stale = self.owner()
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return stale

    def owner(self) -> dict | None:
        try:
            owner = parse_json(read_text(self.path, limit=4096, what="lock file"))
        except UnreadableFile:
            return None
        return owner if isinstance(owner, dict) else None

    def release(self, remove: bool = False) -> None:
        """Unlock; the file stays (emptied) unless `remove`, so that a waiting writer never locks a deleted file."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        else:
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def describe(owner: dict | None) -> str:
    if not owner:
        return "another process"
    return f"pid {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')})"


def refuse_inside_run(path, flag: str = "--out", itself: bool = True) -> None:
    """No command writes into a run directory but the training run that owns it (every run directory holds a
    lock file from its creation on). `itself=False` checks only the folders above `path`."""
    folder = run_directory_around(path, itself)
    if folder is not None:
        raise UserError(f"{flag} {path} is inside the run directory {folder}; only training writes there. "
                        "Choose a path outside it")


def run_directory_around(path, itself: bool = True) -> Path | None:
    """The run directory `path` lies in (or is, with `itself`), else None."""
    target = Path(path).resolve()
    for folder in (target, *target.parents) if itself else target.parents:
        if (folder / LOCK_NAME).exists() or ((folder / "plan.json").is_file() and (folder / "spec.json").is_file()):
            return folder
    return None
