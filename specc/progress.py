"""Progress of an epoch: a tqdm bar on a terminal, else (a log file, CI, a pipe) a log line now and then."""
from __future__ import annotations

import sys
import time


def progress_bar(enabled: bool, total: int, desc: str, say):
    """A progress bar on a terminal; elsewhere (a log file, CI, a pipe) a line every PROGRESS_LINE_SECONDS."""
    if not enabled:
        return None
    if not sys.stderr.isatty():
        return ProgressLines(total, desc, say)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr, dynamic_ncols=True)


PROGRESS_LINE_SECONDS = 60.0


class ProgressLines:
    """The progress bar's interface (`set_postfix`, `update`, `close`) as periodic log lines."""

    def __init__(self, total: int, desc: str, say, every: float | None = None):
        self.total, self.desc, self.say = total, desc, say
        self.every = PROGRESS_LINE_SECONDS if every is None else every
        self.done, self.postfix, self.last = 0, {}, time.monotonic()

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.done += n
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            shown = "  ".join(f"{k.replace('_', '/')} {v}" for k, v in self.postfix.items())
            self.say(f"{self.desc}: batch {self.done}/{self.total}  {shown}")

    def close(self) -> None:
        pass
