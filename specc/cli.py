"""The `specc` command line. Bad input prints a located error and exits 1; usage errors exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from specc import __version__
from specc.errors import UserError
from specc.spec import MAX_BATCH_SIZE, MAX_EPOCHS


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:   # the file system said no (a missing folder, no permission, a full disk): not a bug
        print(f"error: {exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else f"error: {exc}",
              file=sys.stderr)
        return 1
    except Exception as exc:   # a bug, not the user's input: say so briefly; SPECC_DEBUG=1 shows the traceback
        if os.environ.get("SPECC_DEBUG"):
            raise
        print(f"error: internal error in specc ({type(exc).__name__}: {exc}); please report it with the command "
              "you ran (SPECC_DEBUG=1 prints the traceback)", file=sys.stderr)
        return 3


THREADS_HELP = "torch threads (default: OMP_NUM_THREADS if set, else half the CPUs, 1 to 4)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="specc", description="Compile, train and serve sequential recommenders "
                                "from declarative specs.")
    p.add_argument("--version", action="version", version=f"specc {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    c = sub.add_parser("compile", help="check a spec against its schema and print the plan")
    c.add_argument("spec", nargs="?", help="spec file (JSON)")
    c.add_argument("--example", metavar="NAME", help="compile the shipped example spec NAME instead (see `specc "
                   "examples`)")
    c.add_argument("--schema", help="Merlin schema (schema.pbtxt or JSON); default: the spec's \"schema\"")
    c.add_argument("--json", action="store_true", help="print the plan (or the errors) as JSON")
    c.add_argument("--kernels", choices=["auto", "triton", "torch"], default="auto",
                   help="Triton kernels on CUDA (auto), always (triton), or the torch references (torch)")
    c.set_defaults(run=_compile)

    s = sub.add_parser("schema", help="print the JSON Schema of the spec language")
    s.set_defaults(run=_schema)

    ex = sub.add_parser("examples", help="list the example specs that ship with specc, or print one's path")
    ex.add_argument("name", nargs="?", help="an example's name: print the path of its spec file")
    ex.set_defaults(run=_examples)

    t = sub.add_parser("train", help="train a spec'd model on parquet data and evaluate it")
    t.add_argument("spec", help="spec file (JSON)")
    t.add_argument("--data", required=True, help="training parquet file or folder")
    t.add_argument("--eval", dest="eval_data", help="validation parquet file or folder (default: no evaluation)")
    t.add_argument("--out", help="run directory to write (required unless --resume names it)")
    t.add_argument("--schema", help="default: the spec's schema, else schema.pbtxt beside the data")
    t.add_argument("--epochs", type=_epochs, help="default: the spec's training.epochs")
    t.add_argument("--batch-size", type=_batch_size, help="global batch size; default: the spec's "
                   "training.batch_size")
    t.add_argument("--lr", type=_positive_float, help="default: the spec's training.optimizer.lr")
    t.add_argument("--precision", choices=["fp32", "bf16"], help="default: the spec's training.precision")
    t.add_argument("--device", choices=["cpu", "cuda"], default=None, help=_DEVICE_HELP)
    t.add_argument("--log-to", nargs="+", choices=["tensorboard", "mlflow"], metavar="BACKEND",
                   help="also log to tensorboard and/or mlflow (default: the spec's training.log_to; log.jsonl "
                        "is always written)")
    t.add_argument("--tracking-uri", help="MLflow tracking server or store (default: RUN_DIR/mlflow/mlflow.db)")
    t.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue a run from its last checkpoint (the run in --out, or RUN_DIR)")
    t.add_argument("--init-from", metavar="RUN_DIR", help="start a new run from a trained run's weights (a daily "
                   "retrain; a grown catalog keeps its trained rows); default: fresh weights")
    t.add_argument("--exclude-seen", action="store_true", help="never recommend items already in the sequence")
    t.add_argument("--max-time", type=_duration, metavar="TIME", help="stop cleanly after this long (90s, 15m, 2h "
                   "or seconds): finish the step, save, evaluate the kept weights; --resume continues")
    t.add_argument("--eval-every", type=_positive_int, default=1, metavar="N",
                   help="evaluate after every N-th epoch and always after the last one")
    t.add_argument("--quiet", action="store_true",
                   help="no progress bar (nor, when stderr is no terminal, its progress lines)")
    t.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)
    t.add_argument("--nproc-per-node", type=_positive_int, metavar="N",
                   help="train on N processes of this machine (torchrun --standalone; one per GPU on CUDA)")
    t.set_defaults(run=_train)

    on_data = argparse.ArgumentParser(add_help=False)   # what evaluate, recommend and score share
    on_data.add_argument("run_dir", help="a run directory written by specc train")
    on_data.add_argument("--data", required=True, help="parquet file or folder")
    on_data.add_argument("--batch-size", type=_batch_size, default=512)
    on_data.add_argument("--device", choices=["cpu", "cuda"], default=None, help=_DEVICE_HELP)
    on_data.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)
    on_run = argparse.ArgumentParser(add_help=False, parents=[on_data])
    on_run.add_argument("--exclude-seen", action="store_true", help="never recommend items already in the sequence "
                        "(its whole history, also the items older than max_sequence_length)")

    e = sub.add_parser("evaluate", parents=[on_run], help="evaluate a trained run on parquet data")
    e.set_defaults(run=_evaluate)

    r = sub.add_parser("recommend", parents=[on_run], help="top-k next items for each row of a parquet file")
    r.add_argument("--k", type=_positive_int, default=20, help="number of items to return")
    r.add_argument("--out", help="output file: .parquet, or .jsonl / .json (default: JSON lines on stdout)")
    r.add_argument("--ids", choices=["raw", "internal"], help="raw item values (default where the run has id mappings) "
                   "or the model's integer ids")
    r.set_defaults(run=_recommend)

    sc = sub.add_parser("score", parents=[on_data], help="the model's scores of given candidate items for each row")
    given = sc.add_mutually_exclusive_group(required=True)
    given.add_argument("--candidates", metavar="COLUMN", help="a list column of the data: each row's candidates")
    given.add_argument("--items", metavar="A,B,...", help="the same candidates for every row, separated by commas")
    sc.add_argument("--out", help="output file: .parquet, or .jsonl / .json (default: JSON lines on stdout)")
    sc.add_argument("--ids", choices=["raw", "internal"], help="candidates are raw item values (default where the "
                    "run has id mappings) or the model's integer ids; they are written as given")
    sc.set_defaults(run=_score)

    x = sub.add_parser("export", help="export a trained run for inference (TorchScript, ExportedProgram or ONNX) "
                       "with a Triton model repository")
    x.add_argument("run_dir", help="a run directory written by specc train")
    x.add_argument("--out", required=True, help="output folder")
    x.add_argument("--format", choices=["torchscript", "exported_program", "onnx"], default="torchscript")
    x.add_argument("--k", type=_positive_int, default=20, help="number of items to return")
    x.add_argument("--exclude-seen", action="store_true", help="never recommend items already in the sequence")
    x.add_argument("--max-batch-size", type=_positive_int, default=64, help="max_batch_size in config.pbtxt")
    x.set_defaults(run=_export)

    v = sub.add_parser("serve", help="serve a trained run through Triton Inference Server (the tritonserver of "
                       "nvidia-pytriton): KServe v2 over HTTP and gRPC, dynamic batching, metrics")
    v.add_argument("run_dir", help="a run directory written by specc train")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on")
    v.add_argument("--port", type=_port, default=8000, help="HTTP port")
    v.add_argument("--grpc-port", type=_port, default=None, help="default: --port + 1")
    v.add_argument("--metrics-port", type=_port, default=None, help="default: --port + 2")
    v.add_argument("--max-batch-size", type=_positive_int, default=64, help="largest batch Triton forms")
    v.add_argument("--k", type=_positive_int, default=20, help="number of items to return")
    v.add_argument("--exclude-seen", action="store_true", help="never recommend items already in the sequence")
    v.add_argument("--max-queue-delay-us", type=_non_negative_int, default=0,
                   help="how long Triton's dynamic batcher may hold a request to batch it with later ones "
                        "(0: batch only what is already queued)")
    v.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads for the model (default: half the cores, at least 1; the rest are "
                        "left to tritonserver and its stubs)")
    v.add_argument("--max-request-mb", type=_positive_int, default=64,
                   help="largest request (body, and the bytes its declared shapes imply); larger ones get 400/413")
    v.add_argument("--max-restarts", type=_non_negative_int, default=5,
                   help="tritonserver crashes tolerated within --restart-window seconds; one more and serve exits")
    v.add_argument("--restart-window", type=_positive_int, default=300)
    v.add_argument("--ids", choices=["raw", "internal"], help="raw ids in and out (default where the run has id "
                   "mappings) or the model's integer ids")
    v.set_defaults(run=_serve)

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(metavar="ACTION")
    syn = dsub.add_parser("synth", help="write synthetic sessions (Markov chain over items) and their schema")
    syn.add_argument("--schema", help="schema to synthesise for (default: the built-in e-commerce schema)")
    syn.add_argument("--out", required=True, help="output folder")
    syn.add_argument("--train", type=_session_count, default=8000, help="number of training sessions")
    syn.add_argument("--valid", type=_session_count, default=1000, help="number of validation sessions")
    syn.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    syn.set_defaults(run=_synth)

    rp = sub.add_parser("report", help="write an HTML page with pictures of a run: curves, throughput, the plan, "
                        "and the popularity of what it recommends")
    rp.add_argument("run_dir", help="a run directory written by specc train")
    rp.add_argument("--out", help="output folder for report.html and its PNGs (default: RUN_DIR/report)")
    rp.add_argument("--data", help="evaluation parquet to recommend on for the popularity and coverage plots "
                    "(default: none, those plots are skipped)")
    rp.add_argument("--k", type=_positive_int, default=10, help="recommendations per session for those plots")
    rp.set_defaults(run=_report)
    from specc.prepare.command import add_parser as add_prepare_parser
    add_prepare_parser(dsub, _positive_int, _positive_float)
    _show_defaults(p)
    return p


_DEVICE_HELP = "default: cuda if available, else cpu"


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option's help names its default: "(default: X)" is added wherever the help does not say it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in set(action.choices.values()):
                _show_defaults(subparser)
        elif (action.option_strings and not any(action.default is v for v in (None, False, argparse.SUPPRESS))
              and "default" not in (action.help or "")):
            action.help = f"{action.help} (default: %(default)s)" if action.help else "default: %(default)s"


def _positive(kind: type, name: str, allow_zero: bool = False):
    """An argparse type accepting finite numbers > 0 (>= 0 with `allow_zero`) of `kind` (int or float)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if not (0 <= value if allow_zero else 0 < value) or not value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}")
        return value
    return parse


_positive_int = _positive(int, "a positive integer")
_positive_float = _positive(float, "a positive number")
_non_negative_int = _positive(int, "an integer >= 0", allow_zero=True)


def _session_count(text: str) -> int:
    value = _positive_int(text)
    if value > 10_000_000:
        raise argparse.ArgumentTypeError(f"expected at most 10,000,000 sessions, got {text!r}")
    return value


def _at_most(limit: int, what: str):
    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"expected at most {limit:,} {what}, got {text!r}")
        return value
    return parse


_epochs = _at_most(MAX_EPOCHS, "epochs")
_batch_size = _at_most(MAX_BATCH_SIZE, "sessions per batch")


def _duration(text: str) -> float:
    from specc.time_budget import max_time_seconds
    try:
        return max_time_seconds(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("max_time: ")) from None


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (1-65535), got {text!r}")
    return value


def _compile(args) -> int:
    from specc.check import compile as compile_plan
    from specc.errors import SpecError
    if bool(args.spec) == bool(args.example):
        return _usage_error("compile", "give a spec file or --example NAME (one of them)")
    if args.example:
        from specc.example_specs import path
        args.spec = str(path(args.example))
    try:
        plan = compile_plan(args.spec, args.schema, args.kernels)
    except SpecError as exc:
        if args.json:
            print(json.dumps({"ok": False, "errors": [i.to_dict() for i in exc.issues]}, indent=2))
        else:
            print(_with_source(exc, args.spec), file=sys.stderr)
        return 1
    print(plan.to_json() if args.json else plan.summary())
    return 0


def _with_source(exc, path: str) -> str:
    exc.source = exc.source or path
    return exc.render()


def _schema(args) -> int:
    from specc.spec import json_schema
    print(json.dumps(json_schema(), indent=2))
    return 0


def _examples(args) -> int:
    from specc import example_specs as examples
    if args.name:
        print(examples.path(args.name))
        return 0
    for name in examples.names():
        print(f"{name:24s} {examples.path(name)}")
    return 0


def _report(args) -> int:
    from specc.report import report
    print(report(args.run_dir, out=args.out, data=args.data, k=args.k))
    return 0


def _train(args) -> int:
    from specc.commands import train_command
    from specc.cpu import use_threads
    use_threads(args.threads)
    if isinstance(args.resume, str):
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            return _usage_error("train", f"--resume {args.resume} and --out {args.out} name different runs")
        args.out = args.resume
    if not args.out:
        return _usage_error("train", "the following arguments are required: --out (or --resume RUN_DIR)")
    args.resume = bool(args.resume)
    if args.nproc_per_node:
        from specc.distributed import launch
        return launch(args.nproc_per_node, _without_option(args.argv, "--nproc-per-node"))
    return train_command(args)


def _without_option(argv: list[str], option: str) -> list[str]:
    """`argv` less `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def _usage_error(command: str, message: str) -> int:
    print(f"usage: specc {command} ...\nspecc {command}: error: {message}", file=sys.stderr)
    return 2


def _evaluate(args) -> int:
    from specc.commands import evaluate_command
    from specc.cpu import use_threads
    use_threads(args.threads)
    return evaluate_command(args)


def _recommend(args) -> int:
    from specc.commands import recommend_command
    from specc.cpu import use_threads
    use_threads(args.threads)
    return recommend_command(args)


def _score(args) -> int:
    from specc.commands import score_command
    from specc.cpu import use_threads
    use_threads(args.threads)
    return score_command(args)


def _export(args) -> int:
    from specc.export import export
    from specc.lock import refuse_inside_run
    refuse_inside_run(args.out)
    export(args.run_dir, args.out, format=args.format, k=args.k, exclude_seen=args.exclude_seen,
           max_batch_size=args.max_batch_size)
    return 0


def _serve(args) -> int:
    from specc.serve import RestartPolicy, serve
    serve(args.run_dir, host=args.host, port=args.port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
          max_batch_size=args.max_batch_size, k=args.k, exclude_seen=args.exclude_seen,
          max_queue_delay_us=args.max_queue_delay_us, threads=args.threads, max_request_mb=args.max_request_mb,
          restart=RestartPolicy(args.max_restarts, args.restart_window), ids=args.ids)
    return 0


def _synth(args) -> int:
    from specc.schema import load_schema
    from specc.synth import default_schema, synthesize
    from specc.lock import refuse_inside_run
    refuse_inside_run(args.out)
    schema = load_schema(args.schema) if args.schema else default_schema()
    report = synthesize(schema, args.out, n_train=args.train, n_valid=args.valid, seed=args.seed)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
