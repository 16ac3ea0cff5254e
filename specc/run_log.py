"""log.jsonl, the run's epoch records, and keeping it true to the published checkpoint on resume."""
from __future__ import annotations

import json
import os
from pathlib import Path

from specc.checkpoint import RunError
from specc.files import RUN_FILE_LIMIT, UnreadableFile, atomic_write_text, json_text, read_text
from specc.loop import Position


class JsonlLogger:
    """log.jsonl: one JSON line per epoch record (records with an "epoch" key); step records are not kept."""

    def __init__(self, path: Path, fields: dict | None = None):
        self.path, self.fields = path, dict(fields or {})   # `fields` go into every line (world_size)

    def log(self, metrics: dict, step: int) -> None:
        if "epoch" in metrics:
            with open(self.path, "a") as f:
                f.write(json_text({**metrics, "step": step, **self.fields}) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def close(self) -> None:
        pass


def reconcile_log(path: Path, position: Position) -> bool:
    """Drops records of epochs after `position` (they will be trained again) and lines torn by a kill; True when
    the epoch `position` ends has no record yet (the run stopped between its checkpoint and its record)."""
    try:
        lines = read_text(path, limit=RUN_FILE_LIMIT, what="training log").splitlines() if path.exists() else []
    except UnreadableFile as exc:
        raise RunError(f"{exc}; move it away to resume") from None
    kept = {line: record["epoch"] for line, record in _epoch_records(lines, position.epoch)}
    if list(kept) != lines:
        atomic_write_text(path, "".join(line + "\n" for line in kept), durable=True)
    return position.batch == 0 and position.epoch > 0 and position.epoch not in kept.values()


def epoch_records(path: Path, up_to: int) -> list[dict]:
    """The epoch records of log.jsonl for epochs 1..`up_to` (torn lines and later epochs left out)."""
    try:
        lines = read_text(path, limit=RUN_FILE_LIMIT, what="training log").splitlines() if path.exists() else []
    except UnreadableFile as exc:
        raise RunError(f"{exc}; move it away to resume") from None
    return [record for _, record in _epoch_records(lines, up_to)]


def _epoch_records(lines: list[str], up_to: int):
    for line in lines:
        record = _record(line)
        if record is not None and type(record.get("epoch")) is int and record["epoch"] <= up_to:
            yield line, record


def _record(line: str) -> dict | None:
    """A log.jsonl line as a record; None for a line torn by a kill."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None
