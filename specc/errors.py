"""Errors are data: every user-facing problem is an Issue with a JSON path, a stable code and a hint."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, asdict
from typing import Iterable


@dataclass(frozen=True)
class Issue:
    path: str          # JSON path into the spec, e.g. "$.tasks[0].loss.negatives"
    code: str          # stable machine-readable code, e.g. "unknown_column"
    message: str
    hint: str | None = None
    column: str | None = None  # the schema column the issue is about, where there is one

    def render(self) -> str:
        text = f"{self.path}: [{self.code}] {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class UserError(Exception):
    """Base of every error that is the user's input, not a bug: the CLI prints it without a traceback."""


class SpecError(UserError):
    """Raised with every issue found, never just the first."""

    def __init__(self, issues: Iterable[Issue], source: str | None = None):
        self.issues = list(issues)
        self.source = source
        self.partial = None   # a structurally invalid spec: the ModelSpec without its bad keys, where one validates
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.issues)
        head = f"{self.source}: " if self.source else ""
        lines = [f"{head}{n} error{'s' if n != 1 else ''}"]
        lines += ["  " + issue.render().replace("\n", "\n  ") for issue in self.issues]
        return "\n".join(lines)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' hint naming the closest choices, or None when nothing is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=3, cutoff=0.5)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


def json_path(loc: Iterable[str | int]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


class DataError(UserError):
    """A data file or folder that cannot be used; `problems` lists every problem found."""

    def __init__(self, problems: Iterable[str], source: str | None = None, count: int | None = None):
        """`count`: how many problems there are, where `problems` shows only some of them."""
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        n = len(self.problems) if count is None else count
        super().__init__(f"{head}{n} data problem{'s' if n != 1 else ''}\n" + "\n".join("  " + p for p in self.problems))
