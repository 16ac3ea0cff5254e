"""The `specc data prepare` command: flags (or a JSON data spec, flags overriding it) -> `prepare`."""
from __future__ import annotations

import argparse
import sys

from specc.errors import UserError

_LISTS = ("categorical", "continuous", "derive")
_FLAGS = ("out", "item", "time", "session", "user", "session_gap", "min_length", "max_length", "split",
          "valid_fraction", "time_unit", "min_frequency", "categories", "item_features", "partition_rows")


def add_parser(subparsers, positive_int, positive_float) -> None:
    p = subparsers.add_parser(
        "prepare", help="raw event log (parquet/CSV) -> session parquet, schema.pbtxt, id mappings and a report",
        description="Group a raw event log into time-ordered sessions (list columns), categorify ids, split "
                    "train/valid(/test) and write DIR/train, DIR/valid, DIR/schema.pbtxt, DIR/categories and "
                    "DIR/report.json. See docs/prepare.md.")
    p.add_argument("events", nargs="*", metavar="EVENTS", help="parquet or CSV files, folders or globs")
    p.add_argument("--spec", help="a JSON data spec with the same keys as these flags (flags override it)")
    p.add_argument("--out", metavar="DIR", help="output folder (must not exist or be empty)")
    p.add_argument("--item", metavar="COL", help="item id column")
    p.add_argument("--time", metavar="COL", help="event time column (datetime, date, epoch number or ISO text)")
    p.add_argument("--session", metavar="COL", help="session id column (or --user)")
    p.add_argument("--user", metavar="COL", help="user id column: one sequence per user, or sessions by --session-gap")
    p.add_argument("--session-gap", metavar="GAP", help="with --user: a gap longer than this (30m, 1h, 90s) starts a "
                   "new session")
    p.add_argument("--categorical", type=_names, metavar="COL,...", help="more per-event categorical columns")
    p.add_argument("--continuous", type=_names, metavar="COL,...", help="per-event continuous columns")
    p.add_argument("--derive", type=_names, metavar="FEATURE,...",
                   help="derived features: weekday, hour (of the session's start), time_since_prev, "
                   "timestamp (the --time column as <COL>-list of epoch seconds, for hstu's time)")
    p.add_argument("--min-length", type=positive_int, help="drop sessions with fewer events (default 2)")
    p.add_argument("--max-length", type=positive_int, help="keep the most recent N events of each row")
    p.add_argument("--split", choices=["time", "last"], help="time (default): latest-starting sessions are valid; "
                   "last: leave-one-out train/valid/test")
    p.add_argument("--valid-fraction", type=positive_float, help="share of sessions in valid (--split time, 0.1)")
    p.add_argument("--time-unit", choices=["s", "ms", "us", "ns"], help="unit of a numeric time column (default s)")
    p.add_argument("--min-frequency", type=positive_int, help="rarer categorical values share id 1 (not items)")
    p.add_argument("--categories", metavar="PREV_DIR", help="reuse an earlier preparation's id mappings")
    p.add_argument("--item-features", metavar="ITEMS", help="per-item columns to join by item id")
    p.add_argument("--partition-rows", type=positive_int, help="events per in-memory bucket (default 4,000,000)")
    p.add_argument("--engine", choices=["polars", "dask"], default="polars")
    p.add_argument("--scheduler", metavar="ADDRESS", help="with --engine dask: a dask scheduler (default: a local "
                   "cluster)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, got {text!r}")
    return names


def run(args) -> int:
    from specc.prepare import load_prepare_spec, prepare, validate_prepare_spec
    from specc.prepare.finish import describe
    given = {name: getattr(args, name) for name in _FLAGS + _LISTS if getattr(args, name) is not None}
    if args.events:
        given["events"] = args.events
    if args.spec:
        spec = load_prepare_spec(args.spec, **given)
    else:
        missing = [f"--{n}" for n in ("out", "item", "time") if n not in given] + ([] if args.events else ["EVENTS"])
        if missing:
            raise UserError(f"data prepare needs {', '.join(missing)} (or --spec FILE)")
        spec = validate_prepare_spec(given)
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr))
    client = _client(args.scheduler) if args.engine == "dask" else None
    try:
        report = prepare(spec, engine=args.engine, client=client, progress=not args.quiet and sys.stderr.isatty(),
                         log=log)
    finally:
        if client is not None:
            client.close()
    print(describe(report, spec.out))
    return 0


def _client(address: str | None):
    from dask.distributed import Client
    return Client(address) if address else Client(n_workers=2, threads_per_worker=1, processes=False)
