"""A time budget for a training command (`specc train --max-time 15m`): the loop asks it after every step whether it
is spent, then finishes the step, saves a checkpoint and stops; `--resume` continues the run with a budget of its
own. The budget counts from the command's start."""
from __future__ import annotations

import time

from specc.errors import UserError
from specc.prepare.spec import parse_duration

clock = time.monotonic   # the one clock of the budget (tests replace it)


def max_time_seconds(value) -> float | None:
    """--max-time as seconds: a number of seconds, or a duration such as 90s, 15m, 2h; None for no budget."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 < value < float("inf"):
            raise UserError(f"max_time: expected a positive number of seconds, got {value!r}")
        return float(value)
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UserError(f"max_time: {exc}") from None
    if seconds < 1:
        raise UserError(f"max_time: expected at least 1s, got {value!r}")
    return float(seconds)


class TimeBudget:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = clock()

    def spent(self) -> bool:
        return clock() - self.started >= self.seconds
