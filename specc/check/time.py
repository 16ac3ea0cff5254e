"""hstu's time column: the timestamps its time bias reads."""
from __future__ import annotations

from specc.check.context import Context


def time_column(ctx: Context, name: str) -> str | None:
    """`name` when it is an int list column (one timestamp per item, not categorical); else None, reported."""
    path = "$.body.time"
    col = ctx.column(name, path, "`specc data prepare ... --derive timestamp` writes each event's time as "
                     "<time column>-list")
    if col is None:
        return None
    if not col.is_list:
        ctx.error(path, "not_sequential", f"time column {name!r} is not a list column",
                  "the time bias needs one timestamp per item (a list column)", name)
        return None
    if col.dtype != "int" or col.is_categorical:
        ctx.error(path, "not_timestamps", f"time column {name!r} must hold integer timestamps, not "
                  + ("categorical ids" if col.is_categorical else f"{col.dtype} values"),
                  "name a list column of int timestamps (seconds, days, ... since any origin)", name)
        return None
    return col.name
