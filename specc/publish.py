"""Publishing a checkpoint as one unit: its files are written into a temporary folder, fsynced, the folder renamed
into `checkpoints/`, and the pointer `checkpoint.json` replaced last; keeping the best one by a second pointer,
`best.json`, naming a checkpoint already published (see docs/guarantees.md)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from safetensors import SafetensorError

from specc.checkpoint import BEST, CHECKPOINTS, POINTER, RunError, file_mode, published, sha256_file
from specc.files import atomic_write_text, fsync_file, fsync_folder, json_text


def publish_checkpoint(run_dir: Path, position: dict, write: Callable[[Path], None], parts: tuple[str, ...],
                       first_files: dict[str, str], previous: dict | None) -> dict:
    """`write(folder)` fills a new folder with the checkpoint's `parts`; once they and `first_files` (name -> text,
    written beside the checkpoints) are on disk, the pointer names the checkpoint. Returns the new pointer. A
    failure (a full disk) removes what it wrote and leaves `previous` published."""
    step = position["step"]
    folder = run_dir / CHECKPOINTS
    name = _free_name(folder, f"step-{step:09d}")
    tmp, final = folder / f".tmp-{name}", folder / name
    try:
        folder.mkdir(exist_ok=True)
        tmp.mkdir()
        write(tmp)
        sums = {}
        for part in parts:
            os.chmod(tmp / part, file_mode())
            fsync_file(tmp / part)
            sums[part] = sha256_file(tmp / part)
        fsync_folder(tmp)
        tmp.rename(final)
        fsync_folder(folder)
        for file, text in first_files.items():
            atomic_write_text(run_dir / file, text, durable=True)
        atomic_write_text(run_dir / POINTER, json_text(
            {"format": "specc-checkpoint-1", "checkpoint": f"{CHECKPOINTS}/{name}", "step": step,
             "epoch": position["epoch"], "batch": position["batch"], "sha256": sums}, indent=2), durable=True)
    except (OSError, SafetensorError) as exc:
        remove(tmp)
        if not _names(run_dir, final):
            remove(final)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)[:200]
        kept = (f"the checkpoint of step {previous['step']} is intact: free space and continue with --resume"
                if previous else "nothing was saved: free space and start again (the folder can be reused)")
        raise RunError(f"cannot write the checkpoint of step {step} in {run_dir} ({reason}); {kept}") from None
    return published(run_dir)


def publish_best(run_dir: Path, pointer: dict, selection: dict) -> dict:
    """Name the published checkpoint `pointer` (whole on disk: it was published first) in best.json, with what it
    was selected by (`selection`: metric, value, metrics). One atomic replace: best.json names the old best or the
    new one, never neither. Returns the new best pointer."""
    fields = {k: v for k, v in pointer.items() if k != "path"}
    atomic_write_text(run_dir / BEST, json_text({**fields, "format": "specc-best-1", **selection}, indent=2),
                      durable=True)
    return published(run_dir, BEST)


def prune(run_dir: Path, pointers: tuple[dict | None, ...]) -> None:
    """Remove every checkpoint that no pointer names (the published one, the best one), and temporary files a
    killed writer left."""
    folder = run_dir / CHECKPOINTS
    named = {pointer["path"].name for pointer in pointers if pointer is not None}
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.name not in named:
            remove(entry)
    for entry in run_dir.glob("*.tmp"):
        remove(entry)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _names(run_dir: Path, folder: Path) -> bool:
    """Whether the pointer on disk names `folder`."""
    try:
        return published(run_dir)["path"] == folder
    except RunError:
        return False


def _free_name(folder: Path, name: str) -> str:
    taken = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    count, candidate = 1, name
    while candidate in taken or f".tmp-{candidate}" in taken:
        count += 1
        candidate = f"{name}-{count}"
    return candidate
