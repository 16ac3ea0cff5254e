"""Reading and writing the files specc is given or keeps.

Every file whose path comes from a user or a run directory is read through `read_bytes` / `read_json`: only a
regular file (never a device such as /dev/zero, a FIFO that would block, or a socket), at most `limit` bytes, and
errors name the file and the reason, never its content. Writes are atomic: a file holds its old content or its
new one, and `durable=True` also survives a power cut (fsynced, with the folder's entry)."""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from specc.errors import UserError

MiB = 1 << 20
SPEC_LIMIT = 16 * MiB       # a spec file
SCHEMA_LIMIT = 64 * MiB     # a schema.pbtxt / schema.json
RUN_FILE_LIMIT = 64 * MiB   # a JSON file of a run directory (plan, columns, training state, log)


class UnreadableFile(UserError):
    """A file that is not there, not a regular file, too large or not the text it should be."""


def read_bytes(path, *, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, refusing anything else or more than `limit` bytes."""
    name = os.fspath(path)
    try:   # O_NONBLOCK: opening a FIFO does not wait for a writer; it is refused below
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UnreadableFile(f"{what} {name} does not exist") from None
    except OSError as exc:
        raise UnreadableFile(f"cannot read {what} {name}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UnreadableFile(f"{what} {name} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"{what} {name} is not a regular file (a device, pipe or socket); "
                                 "specc reads only files")
        if info.st_size > limit:
            raise UnreadableFile(_too_large(what, name, info.st_size, limit))
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 16 * MiB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:   # it grew while being read
            raise UnreadableFile(_too_large(what, name, size, limit))
        return b"".join(chunks)
    except OSError as exc:
        raise UnreadableFile(f"cannot read {what} {name}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _too_large(what: str, name: str, size: int, limit: int) -> str:
    return f"{what} {name} holds {size:,} bytes, more than a {what} may ({limit:,}); is it the right file?"


def read_text(path, *, limit: int, what: str = "file") -> str:
    """`read_bytes` decoded as UTF-8 (a leading byte-order mark is dropped)."""
    raw = read_bytes(path, limit=limit, what=what)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{what} {os.fspath(path)} is not UTF-8 text (byte {exc.start})") from None


def parse_json(text: str, what: str = "JSON") -> Any:
    """JSON, with every way of failing (syntax, nesting, a number too long to convert) an UnreadableFile whose
    message gives a position, never the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"{what} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise UnreadableFile(f"{what} is JSON nested too deeply") from None
    except ValueError:   # an integer beyond Python's int_max_str_digits
        raise UnreadableFile(f"{what} holds a number with more digits than any setting needs") from None


def read_json(path, *, limit: int = RUN_FILE_LIMIT, what: str = "file") -> Any:
    return parse_json(read_text(path, limit=limit, what=what), f"{what} {os.fspath(path)}")


def json_text(record: dict, **kwargs) -> str:
    """JSON without NaN/Infinity, which are not JSON: an undefined metric (e.g. AUC with labels of one class) is null."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()},
                      allow_nan=False, **kwargs)


def atomic_write_text(path: Path, text: str, durable: bool = False) -> None:
    """`path` holds either its old content or `text`, never a part of it; readable by all, like other files."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path: Path) -> None:
    """Makes the names created or renamed in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
