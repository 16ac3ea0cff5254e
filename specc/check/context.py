"""What every part of the semantic check shares: the spec, the schema, and the list of errors found so far."""
from __future__ import annotations

from dataclasses import dataclass, field

from specc import spec as S
from specc.errors import Issue, did_you_mean
from specc.schema import Column, Schema


@dataclass
class Context:
    spec: S.ModelSpec
    schema: Schema
    kernels: str
    trial_run: bool = True   # False: skip the checks that run or read things (for plans checked before)
    issues: list[Issue] = field(default_factory=list)

    def error(self, path: str, code: str, message: str, hint: str | None = None, column: str | None = None):
        self.issues.append(Issue(path, code, message, hint, column))

    def column(self, name: str, path: str, hint: str | None = None) -> Column | None:
        """The schema column `name`, or None after reporting it unknown (with the closest names, then `hint`)."""
        if name in self.schema:
            return self.schema[name]
        source = f" ({self.schema.source})" if self.schema.source else ""
        near = did_you_mean(name, self.schema.names)
        self.error(path, "unknown_column", f"column {name!r} is not in the schema{source}",
                   "; ".join(h for h in (near, hint) if h) or None, name)
        return None
