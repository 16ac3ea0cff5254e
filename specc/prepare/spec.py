"""The data spec: what `specc data prepare` does, as a small frozen pydantic model (flags or a JSON file)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from specc.errors import Issue, SpecError, json_path

DERIVED = ("weekday", "hour", "time_since_prev")   # column names derive adds (timestamp lists the --time column)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'30m', '1h', '90s', '2d' or a plain number of seconds -> seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"expected a duration such as 30m, 1h, 90s or 2d, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2) or "s"])


class PrepareSpec(BaseModel):
    """`specc data prepare` settings; every flag of the command is a key of the same name (dashes -> _)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[str] = Field(min_length=1, description="parquet or CSV files, folders or globs")
    out: str
    item: str
    time: str
    session: str | None = None
    user: str | None = None
    session_gap: str | None = Field(None, description="with `user`: a gap longer than this starts a new session")
    categorical: list[str] = []
    continuous: list[str] = []
    derive: list[Literal["weekday", "hour", "time_since_prev", "timestamp"]] = []
    min_length: int = Field(2, ge=1)
    max_length: int | None = Field(None, ge=1)
    split: Literal["time", "last"] = "time"
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    time_unit: Literal["s", "ms", "us", "ns"] = Field("s", description="unit of a numeric time column")
    min_frequency: int = Field(1, ge=1, description="rarer values of a categorical column share the id 1")
    categories: str | None = Field(None, description="an earlier output folder whose mappings are reused")
    item_features: str | None = Field(None, description="a parquet or CSV file of per-item columns")
    partition_rows: int = Field(4_000_000, ge=1, description="events per bucket processed in memory")

    @field_validator("events", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any):
        return [value] if isinstance(value, str) else value

    @field_validator("session_gap")
    @classmethod
    def _duration(cls, value: str | None):
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _keys(self):
        if (self.session is None) == (self.user is None):
            raise ValueError("give exactly one of `session` (a session id column) or `user` (a user id column)")
        if self.session_gap is not None and self.user is None:
            raise ValueError("`session_gap` splits a user's events into sessions: it needs `user`, not `session`")
        named = [self.item, self.time, self.key, *self.categorical, *self.continuous]
        repeated = sorted({c for c in named if named.count(c) > 1})
        if repeated:
            raise ValueError(f"each column has one role; {', '.join(map(repr, repeated))} is given more than once")
        lists = [self.item, *self.categorical, *self.continuous, *self.derived_lists]
        clashing = sorted({f"{c}-list" for c in lists if lists.count(c) > 1})
        if clashing:
            raise ValueError(f"derive would write {', '.join(map(repr, clashing))} twice; rename the column")
        return self

    @property
    def derived_lists(self) -> list[str]:
        """The per-event columns `derive` adds, written as `<name>-list` like the log's columns."""
        return ([self.time] if "timestamp" in self.derive else []) + \
            (["time_since_prev"] if "time_since_prev" in self.derive else [])

    @property
    def key(self) -> str:
        """The column events are grouped by: the session column, or the user column."""
        return self.session or self.user

    @property
    def gap_seconds(self) -> int | None:
        return parse_duration(self.session_gap) if self.session_gap else None


def load_prepare_spec(source: "str | dict", **overrides) -> PrepareSpec:
    """A PrepareSpec from a JSON file or a dict; relative paths in a file are relative to the file's folder.
    Every problem is reported at once as a SpecError with JSON paths."""
    origin, data = None, source
    if isinstance(source, str):
        origin = source
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8-sig"))
        except OSError as exc:
            raise SpecError([Issue("$", "file_not_found", f"cannot read the data spec {source!r}: {exc.strerror}")]) \
                from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SpecError([Issue("$", "invalid_json", f"the data spec is not valid JSON: {exc}")], origin) from None
    if not isinstance(data, dict):
        raise SpecError([Issue("$", "invalid_type", "a data spec is a JSON object")], origin)
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    if origin:
        data = _relative_to(Path(origin).resolve().parent, data)
    return validate_prepare_spec(data, origin)


def validate_prepare_spec(data: dict, origin: str | None = None) -> PrepareSpec:
    try:
        return PrepareSpec.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            code = {"extra_forbidden": "unknown_key", "missing": "missing_key",
                    "literal_error": "invalid_choice"}.get(err["type"], "invalid_value")
            message = err["msg"].removeprefix("Value error, ")
            hint = None
            if code == "unknown_key":
                from specc.errors import did_you_mean
                hint = did_you_mean(err["loc"][-1], PrepareSpec.model_fields)
            issues.append(Issue(json_path(err["loc"]), code, message, hint))
        raise SpecError(issues, origin) from None


def _relative_to(base: Path, data: dict) -> dict:
    def resolve(p):
        return p if not isinstance(p, str) or Path(p).is_absolute() else str(base / p)
    out = dict(data)
    for key in ("out", "categories", "item_features"):
        if key in out:
            out[key] = resolve(out[key])
    if "events" in out:
        out["events"] = [resolve(e) for e in out["events"]] if isinstance(out["events"], list) else \
            resolve(out["events"])
    return out
