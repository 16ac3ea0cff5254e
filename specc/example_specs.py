"""The example specs and schemas that ship with specc: `specs/` of the repository, the folder `specc/examples/` when
installed (data files, not a module).

    specc examples            every example: its name and path
    specc examples NAME       the path of one example spec, e.g. specc train "$(specc examples sasrec)" ...
    specc compile --example NAME
"""
from __future__ import annotations

from pathlib import Path

from specc.errors import UserError, did_you_mean

_HERE = Path(__file__).resolve().parent


def folder() -> Path:
    """specc/examples in an installed package, else the repository's specs/ beside this source tree."""
    for candidate in (_HERE / "examples", _HERE.parent / "specs"):
        if (candidate / "schemas").is_dir():
            return candidate
    raise UserError(f"the example specs are missing from this installation ({_HERE / 'examples'})")


def names() -> list[str]:
    return sorted(p.stem for p in folder().glob("*.json"))


def path(name: str) -> Path:
    """The spec file of the example `name` (a UserError with a suggestion if there is none)."""
    spec = folder() / f"{name}.json"
    if not spec.is_file():
        hint = did_you_mean(name, names())
        raise UserError(f"no example spec named {name!r}" + (f"; {hint}" if hint else "")
                        + " (`specc examples` lists them)")
    return spec
