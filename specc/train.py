"""Training, evaluation and recommendation on parquet data, and the `specc train/evaluate/recommend` commands."""
from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from specc.checkpoint import (RunError, check_same_plan, load, load_train_state, load_weights, run_schema,
                              save_model_files, save_train_state, saved_settings)
from specc.cpu import keep_freed_memory
from specc.errors import SpecError, UserError
from specc.mappings import raw_item_ids, record as record_mappings


def resolve_training_schema(spec, schema_arg, data_path: str):
    """The --schema flag, else the spec's schema, else schema.pbtxt beside the data."""
    from specc.check import resolve_schema
    from specc.schema import load_schema
    if schema_arg or spec.schema_path:
        return resolve_schema(spec, schema_arg)
    data = Path(data_path)
    for folder in (data if data.is_dir() else data.parent, (data if data.is_dir() else data.parent).parent):
        if (folder / "schema.pbtxt").is_file():
            return load_schema(str(folder / "schema.pbtxt"))
    raise UserError(f"no schema: pass --schema, name one in the spec, or put schema.pbtxt beside {data_path}")


def open_for(model, path: str, schema, min_length: int, with_targets: bool = True):
    from specc.data import open_dataset
    columns = model.input_columns + (model.target_columns if with_targets else [])
    return open_dataset(path, schema, columns, item_column=model.sequence_column,
                        max_length=model.max_length, min_length=min_length)


def evaluate(model, dataset, batch_size: int = 512, exclude_seen: bool = False, device: str = "cpu") -> dict:
    """Full-catalog metrics: each sequence's last item predicted from the items before it (see README)."""
    from specc.metrics import MetricAccumulator
    plan = model.plan
    task = plan.next_item
    k = max((c for cs in task.metrics.values() for c in cs), default=1) if task else 1
    accumulators, updates = [], {}
    for t in plan.tasks:
        if t.kind == "next_item":
            acc = MetricAccumulator(ranking=t.metrics)
            updates[t.name] = acc.update_ranking
        elif t.kind == "binary_classification":
            acc = MetricAccumulator(classification=t.metrics, prefix=t.name)
            updates[t.name] = acc.update_classification
        else:
            acc = MetricAccumulator(regression=t.metrics, prefix=t.name)
            updates[t.name] = acc.update_regression
        accumulators.append(acc)
    model.eval()
    with torch.no_grad():
        for batch in dataset.batches(batch_size, shuffle=False):
            batch = {c: v.to(device) for c, v in batch.items()}
            for name, (pred, label) in model.evaluate_batch(batch, k=k, exclude_seen=exclude_seen).items():
                updates[name](pred, label)
    metrics = {}
    for acc in accumulators:
        metrics.update(acc.compute())
    return metrics


def _optimizer(model, opt):
    params = [p for p in model.parameters() if p.requires_grad]
    # one fused kernel per step instead of a handful of ops per parameter tensor (CPU and CUDA)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    if opt.kind == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=0.9, weight_decay=opt.weight_decay, fused=fused)
    cls = torch.optim.AdamW if opt.kind == "adamw" else torch.optim.Adam
    return cls(params, lr=opt.lr, weight_decay=opt.weight_decay, fused=fused)


def _schedule(optimizer, total_steps: int, warmup: float, kind: str):
    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(spec, data: str, out: str, eval_data: str | None = None, schema=None, epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None, precision: str | None = None,
          device: str | None = None, resume: bool = False, exclude_seen: bool = False, eval_every: int = 1,
          progress: bool = True, log=print) -> dict:
    """Train the spec'd model on `data`, evaluate on `eval_data`, and write the run directory `out`."""
    from specc.builder import build_from_plan
    from specc.check import compile as compile_plan
    from specc.spec import load_spec
    source = spec
    try:
        spec = load_spec(source)
    except SpecError as exc:
        if exc.partial is not None:   # report the semantic errors of the rest of the spec too
            compile_plan(source, resolve_training_schema(exc.partial, schema, data))
        raise
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file, not a run directory")
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        if (run_dir / "train_state.json").is_file():
            raise RunError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        raise RunError(f"{run_dir} is not empty; choose a new or empty folder for the run")
    if resume and not (run_dir / "train_state.json").is_file():
        raise RunError(f"{run_dir}: nothing to resume (no train_state.json)")
    schema = resolve_training_schema(spec, schema, data)
    device = resolve_device(device)
    if device == "cpu":
        keep_freed_memory()
    asked = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "precision": precision,
             "data": str(Path(data).resolve())}
    extended_from = None
    if resume:   # continue with the run's own settings; a different one would not continue the same run
        saved = saved_settings(run_dir)
        asked = _resume_settings(run_dir, saved, asked)
        if asked["epochs"] and saved.get("epochs") and asked["epochs"] > saved["epochs"]:
            extended_from = saved["epochs"]
    epochs, batch_size, lr, precision = asked["epochs"], asked["batch_size"], asked["lr"], asked["precision"]
    tr = spec.training.model_copy(update={"precision": precision}) if precision else spec.training
    epochs = epochs or tr.epochs
    batch_size = batch_size or tr.batch_size
    opt_spec = tr.optimizer.model_copy(update={"lr": lr}) if lr else tr.optimizer
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": opt_spec.lr, "precision": tr.precision,
                "data": asked["data"]}

    plan = compile_plan(spec, schema)
    torch.manual_seed(tr.seed)
    model = build_from_plan(plan).to(device)
    generator = torch.Generator().manual_seed(tr.seed)
    model.generator = generator
    has_next_item = plan.next_item is not None
    min_train = 2 if has_next_item and plan.masking.kind == "causal" else 1
    train_set = open_for(model, data, schema, min_train)
    eval_set = open_for(model, eval_data, schema, 2 if has_next_item else 1) if eval_data else None
    for ds, role in ((train_set, "training"), (eval_set, "evaluation")):
        if ds is not None and ds.n_skipped:
            log(f"{role} data: skipped {ds.n_skipped} sequence(s) too short to use ({ds.n_rows} kept)")
    if has_next_item and plan.next_item.loss.sampler == "popularity":
        model.next_item.item_counts.copy_(train_set.item_counts(plan.next_item.n_items).to(device))

    if extended_from and (tr.schedule != "constant" or tr.warmup > 0):
        log(f"note: extending a {extended_from}-epoch run to {epochs} epochs re-plans its learning-rate schedule "
            f"({tr.schedule}, warm-up {tr.warmup:g}) over {epochs} epochs, so it will not equal a run trained for "
            f"{epochs} epochs from the start")
    steps_per_epoch = math.ceil(train_set.n_rows / batch_size)
    optimizer = _optimizer(model, opt_spec)
    scheduler = _schedule(optimizer, steps_per_epoch * epochs, tr.warmup, tr.schedule)
    start_epoch, skip, step = 0, 0, 0
    if resume:
        check_same_plan(run_dir, plan)
        start_epoch, skip, step = load_train_state(run_dir, optimizer, scheduler, generator)
        load_weights(run_dir, model)
        if start_epoch >= epochs:
            log(f"{run_dir} is already trained for {start_epoch} epoch(s); pass --epochs above that to continue")
            saved = run_dir / "metrics.json"
            return json.loads(saved.read_text()) if saved.is_file() else {"epochs": start_epoch}
        log(f"resuming {run_dir} at epoch {start_epoch + 1}, batch {skip + 1} (step {step})")
    spec_dict = {k: v for k, v in spec.to_json_dict().items() if k != "schema"}
    # bf16 autocast on CUDA, and on CPUs with bf16 matrix units (AVX512-BF16/AMX), where it is ~4x cheaper
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=tr.precision == "bf16")
    log_path = run_dir / "log.jsonl"
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)   # fail now, not after an epoch, if it cannot be written
    record_mappings(run_dir, data)
    train_seconds, sessions, last_loss = 0.0, 0, float("nan")
    metrics: dict = {}
    stop = _StopOnInterrupt()
    epoch, done = start_epoch, 0
    with stop, _removed_if_left_empty(run_dir, created):
        for epoch in range(start_epoch, epochs):
            model.train()
            bar = _progress(progress, steps_per_epoch, f"epoch {epoch + 1}/{epochs}")
            total, count, t0 = 0.0, 0, time.perf_counter()
            batches = train_set.batches(batch_size, shuffle=True, seed=tr.seed, epoch=epoch)
            for done, batch in enumerate(batches, start=1):
                if epoch == start_epoch and done <= skip:   # resumed mid-epoch: these batches were trained
                    continue
                batch = {c: v.to(device, non_blocking=True) for c, v in batch.items()}
                with autocast:
                    loss = model(batch)["loss"]
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingDiverged(f"the loss became {value} at epoch {epoch + 1}, batch {done} (step "
                                           f"{step + 1}): training diverged; lower the learning rate (now "
                                           f"{opt_spec.lr:g}) or keep clip_grad_norm on. "
                                           + (f"{run_dir} keeps the last finished epoch." if epoch > start_epoch
                                              or resume else "Nothing was saved."))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if tr.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tr.clip_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                n = next(iter(batch.values())).shape[0]
                total, count = total + value * n, count + n
                if bar is not None:
                    elapsed = time.perf_counter() - t0
                    bar.set_postfix(loss=f"{total / count:.4f}", sessions_s=f"{count / max(elapsed, 1e-9):.0f}")
                    bar.update(1)
                if stop.requested:
                    break
            if bar is not None:
                bar.close()
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            sessions += count
            last_loss = total / max(count, 1)
            if stop.requested:
                save_model_files(run_dir, model, spec_dict, schema)
                save_train_state(run_dir, optimizer, scheduler, generator, epoch, done, step, settings)
                log(f"interrupted: saved {run_dir} at epoch {epoch + 1}, batch {done}; continue with --resume")
                break
            save_model_files(run_dir, model, spec_dict, schema)
            save_train_state(run_dir, optimizer, scheduler, generator, epoch + 1, 0, step, settings)
            evaluated = {}
            if eval_set and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
                metrics = evaluated = evaluate(model, eval_set, device=device, exclude_seen=exclude_seen)
            line = {"epoch": epoch + 1, "step": step, "loss": last_loss, "seconds": round(seconds, 3),
                    "sessions_per_s": round(count / max(seconds, 1e-9), 1), **evaluated}
            with open(log_path, "a") as f:
                f.write(_json(line) + "\n")
            log(_epoch_line(line))
    result = {**metrics, "loss": last_loss, "epochs": epoch + (0 if stop.requested else 1),
              "train_seconds": round(train_seconds, 3),
              "train_sessions_per_s": round(sessions / max(train_seconds, 1e-9), 1),
              "train_sessions": train_set.n_rows, "eval_sessions": eval_set.n_rows if eval_set else 0,
              "interrupted": stop.requested}
    (run_dir / "metrics.json").write_text(_json(result, indent=2) + "\n")
    return result


def _json(record: dict, **kwargs) -> str:
    """JSON without NaN/Infinity, which are not JSON: an undefined metric (e.g. AUC with labels of one class) is null."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()},
                      allow_nan=False, **kwargs)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def resolve_device(device: str | None) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _resume_settings(run_dir: Path, saved: dict, asked: dict) -> dict:
    """The settings a resumed run continues with: the saved ones; a flag that differs is an error (epochs may grow)."""
    out = dict(asked)
    for key, value in saved.items():
        if asked.get(key) is None:
            out[key] = value
        elif value is not None and asked[key] != value and not (key == "epochs" and asked[key] > value):
            flag = "--" + key.replace("_", "-")
            raise RunError(f"{run_dir} was trained with {flag} {value}; resuming with {asked[key]} would not continue "
                           f"the same run (leave {flag} out, or start a new run)")
    return out


@contextmanager
def _removed_if_left_empty(run_dir: Path, created: bool):
    """A run folder this command created is removed again if training fails before writing anything to it."""
    try:
        yield
    except BaseException:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


class _StopOnInterrupt:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current batch, so the saved state is whole."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:   # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        import signal
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr, dynamic_ncols=True)


def _epoch_line(line: dict) -> str:
    shown = [f"epoch {line['epoch']}", f"loss {line['loss']:.4f}", f"{line['sessions_per_s']:.0f} sessions/s"]
    shown += [f"{k} {v:.4f}" for k, v in line.items() if "@" in k or "/" in k]
    return "  ".join(shown)


# ---------------------------------------------------------------------------------------------- commands

def _device(args) -> str:
    return resolve_device(args.device)


def train_command(args) -> int:
    quiet = args.quiet
    result = train(args.spec, args.data, args.out, eval_data=args.eval_data, schema=args.schema, epochs=args.epochs,
                   batch_size=args.batch_size, lr=args.lr, precision=args.precision, device=args.device,
                   resume=args.resume, exclude_seen=args.exclude_seen, eval_every=args.eval_every,
                   progress=not quiet and sys.stderr.isatty(),
                   log=lambda m: print(m, file=sys.stderr))
    print(_json(result, indent=2))
    return 130 if result["interrupted"] else 0


def evaluate_command(args) -> int:
    device = _device(args)
    model = load(args.run_dir, device=device)
    dataset = open_for(model, args.data, run_schema(args.run_dir), 2 if model.plan.next_item else 1)
    if dataset.n_skipped:
        print(f"note: skipped {dataset.n_skipped} of {dataset.n_total} sequence(s) too short to evaluate",
              file=sys.stderr)
    metrics = evaluate(model, dataset, args.batch_size, args.exclude_seen, device)
    metrics["eval_sessions"] = dataset.n_rows
    print(_json(metrics, indent=2))
    return 0


def recommend_command(args) -> int:
    if args.out and not args.out.endswith((".parquet", ".jsonl", ".json")):
        raise UserError(f"--out {args.out}: use a .parquet file, or .jsonl / .json for JSON lines")
    if args.out and Path(args.out).resolve() == Path(args.data).resolve():
        raise UserError(f"--out {args.out} is the input data; choose another file")
    device = _device(args)
    model = load(args.run_dir, device=device)
    if model.plan.next_item is None:
        raise UserError(f"{args.run_dir}: the model has no next_item task to recommend with")
    k = min(args.k, model.plan.next_item.n_items - 1)
    if k < args.k:
        print(f"note: --k {args.k} is more than the catalog's {k} items; returning all {k}", file=sys.stderr)
    dataset = open_for(model, args.data, run_schema(args.run_dir), 1, with_targets=False)
    if dataset.n_skipped:
        print(f"note: {dataset.n_skipped} of {dataset.n_total} row(s) have no items; their recommendations are "
              "empty", file=sys.stderr)
    # every input row gets a line, by its row number in the input; rows without items get empty lists
    ids_out: list = [[] for _ in range(dataset.n_total)]
    scores_out: list = [[] for _ in range(dataset.n_total)]
    rows = iter(dataset.source_rows().tolist())
    for batch in dataset.batches(args.batch_size, shuffle=False):
        scores, ids = model.recommend({c: v.to(device) for c, v in batch.items()}, k=k, exclude_seen=args.exclude_seen)
        for s, i in zip(scores.cpu().tolist(), ids.cpu().tolist()):
            row = next(rows)
            # with --exclude-seen a row can have fewer than k unseen items: those slots (id -1) are left out
            kept = [(item, score) for item, score in zip(i, s) if item > 0 and math.isfinite(score)]
            ids_out[row] = [item for item, _ in kept]
            scores_out[row] = [score for _, score in kept]
    ids_out = raw_item_ids(args.run_dir, model.plan.next_item.target, ids_out, args.ids)
    _write_recommendations(args.out, list(range(dataset.n_total)), ids_out, scores_out)
    return 0


def _write_recommendations(out: str | None, rows, ids, scores) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    if out and out.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"row": rows, "item_ids": ids, "scores": scores}), out)
        return
    lines = (json.dumps({"row": r, "item_ids": i, "scores": [round(x, 6) for x in s]}) for r, i, s in
             zip(rows, ids, scores))
    if out:
        Path(out).write_text("".join(line + "\n" for line in lines))
    else:
        for line in lines:
            print(line)
