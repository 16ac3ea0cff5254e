"""Checks of the hstu body and its time column (called from the checker's body part)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from specc import spec as S
from specc.plan import BodyPlan

if TYPE_CHECKING:
    from specc.check import Checker


def resolve_hstu(checker: "Checker", body: S.HstuBody, causal: bool) -> BodyPlan | None:
    time = None
    if body.time is not None:
        time = check_time_column(checker, body.time)
        if time is None:
            return None
    return BodyPlan("hstu", None, body.d_model, body.d_model, causal, n_head=body.n_head, n_layer=body.n_layer,
                    dropout=body.dropout, max_positions=checker.spec.inputs.max_sequence_length, time_column=time)


def check_time_column(checker: "Checker", name: str) -> str | None:
    """The timestamps must be an int list column (one value per item), not categorical."""
    path = "$.body.time"
    col = checker.column(name, path)
    if col is None:
        return None
    if not col.is_list:
        checker.error(path, "not_sequential", f"time column {name!r} is not a list column",
                      "the time bias needs one timestamp per item (a list column)", name)
        return None
    if col.dtype != "int" or col.is_categorical:
        checker.error(path, "not_timestamps", f"time column {name!r} must hold integer timestamps, not "
                      + ("categorical ids" if col.is_categorical else f"{col.dtype} values"),
                      "name a list column of int timestamps (seconds, days, ... since any origin)", name)
        return None
    return col.name
