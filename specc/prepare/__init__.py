"""`specc data prepare`: raw event logs -> session parquet, a Merlin schema, id mappings and a report.

    from specc.prepare import prepare
    report = prepare({"events": "logs/", "out": "data/", "item": "item_id", "time": "ts", "session": "session_id"})

See docs/prepare.md. polars is imported when a preparation runs, not by `import specc`.
"""
from __future__ import annotations

from specc.prepare.schema_file import write_schema
from specc.prepare.spec import PrepareSpec, load_prepare_spec, validate_prepare_spec


def prepare(spec: "PrepareSpec | dict | str", *, engine: str = "polars", client=None, progress: bool = False,
            log=None) -> dict:
    """Run a preparation and return its report (also written to OUT/report.json).

    `spec` is a PrepareSpec, a dict of its keys, or the path of a JSON data spec. `engine="dask"` runs the
    per-session work on the workers of `client` (a dask.distributed Client)."""
    if isinstance(spec, str):
        spec = load_prepare_spec(spec)
    elif isinstance(spec, dict):
        spec = validate_prepare_spec(spec)
    if engine == "dask":
        from specc.prepare.distributed import prepare_dask
        return prepare_dask(spec, client, progress=progress, log=log)
    from specc.prepare.local import prepare_local
    return prepare_local(spec, progress=progress, log=log)


__all__ = ["prepare", "PrepareSpec", "load_prepare_spec", "validate_prepare_spec", "write_schema"]
