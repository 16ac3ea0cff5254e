"""`train`: a spec, training data and a run directory in; a trained, evaluated model in the run directory out.

It composes the rooms of training: the run directory (`run_dir.py`), the optimizer and schedule (`optim.py`),
the loop (`loop.py`) and evaluation (`evaluation.py`); under torchrun, the distributed context (`distributed.py`)
says which process this is: each trains on its share of the data with batch_size / world_size rows per step,
gradients are averaged by DistributedDataParallel, and rank 0 alone writes the run directory."""
from __future__ import annotations

from pathlib import Path

import torch

from specc.checkpoint import POINTER, RunError
from specc.cpu import keep_freed_memory
from specc.errors import Issue, SpecError, UserError
from specc.evaluation import evaluate, open_evaluation, open_for
from specc.loop import Hooks, LoopSettings, Position, end_epoch, train_loop
from specc.optim import build_optimizer, build_schedule
from specc.run_dir import RunDirectory
from specc.run_log import epoch_records
from specc.selection import Selection
from specc.tracking import open_trackers


def train(spec, data: str, out: str, eval_data: str | None = None, schema=None, epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None, precision: str | None = None,
          device: str | None = None, resume: bool = False, exclude_seen: bool = False, eval_every: int = 1,
          progress: bool = True, log=print, loggers=(), tracking=None, context=None, init_from=None) -> dict:
    """Train the spec'd model on `data`, evaluate on `eval_data`, and write the run directory `out`.
    `loggers` get every metric record as well as log.jsonl (see `specc.loop`), and so do the experiment trackers
    that `tracking` (a specc.tracking.Tracking) or the spec's training.log_to name. `context`: the process's
    `specc.distributed` context (default: from the environment, torchrun's or a single process). `init_from`: a
    trained run whose weights a new run starts from (specc/warm_start.py)."""
    from specc.distributed import from_environment
    if context is None:
        with from_environment(resolve_device(device)) as context:
            return train(spec, data, out, eval_data, schema, epochs, batch_size, lr, precision, device, resume,
                         exclude_seen, eval_every, progress, log, loggers, tracking, context, init_from)
    from specc.builder import build_from_plan
    from specc.check import compile as compile_plan
    if init_from and resume:
        raise UserError("--init-from starts a new run from another run's weights; --resume continues a run: pass one")
    spec = _load_spec(spec, schema, data)
    log = log if context.is_main else _silent
    # torchrun restarting the processes after a failure: continue from the last published checkpoint
    resume = resume or (context.restart_count > 0 and (Path(out) / POINTER).is_file())
    with RunDirectory(out, resume, say=log, writer=context.is_main) as run:
        schema = resolve_training_schema(spec, schema, data)
        device = context.device
        if device == "cpu":
            keep_freed_memory()
        tr = spec.training
        # a resumed run continues with its own settings; a new one with the flags, else the spec's
        settings = run.settings({"epochs": epochs, "batch_size": batch_size, "lr": lr, "precision": precision,
                                 "data": str(Path(data).resolve())})
        defaults = {"epochs": tr.epochs, "batch_size": tr.batch_size, "lr": tr.optimizer.lr, "precision": tr.precision}
        settings = {k: settings[k] or defaults.get(k) for k in settings}
        settings["world_size"] = context.world_size
        per_process = _per_process_batch(settings["batch_size"], context.world_size, batch_size is None)
        plan = compile_plan(spec, schema)
        torch.manual_seed(tr.seed)
        model = build_from_plan(plan).to(device)
        if init_from:
            from specc.warm_start import warm_start
            log(warm_start(model, init_from))
        # each process draws its own dropout, masks and negatives
        model.generator = generator = torch.Generator().manual_seed(tr.seed + context.rank)
        train_set, eval_set = _open_data(model, data, eval_data, schema, log, context, exclude_seen)

        _say_if_schedule_is_replanned(run, tr, settings["epochs"], log)
        loop = LoopSettings(epochs=settings["epochs"], batch_size=per_process,
                            steps_per_epoch=train_set.steps(per_process), seed=tr.seed,
                            lr=settings["lr"], clip_grad_norm=tr.clip_grad_norm, bf16=settings["precision"] == "bf16",
                            device=device, eval_every=eval_every, checkpoint_every=tr.checkpoint_every,
                            progress=progress and context.is_main, world_size=context.world_size)
        optimizer = build_optimizer(model, tr.optimizer.model_copy(update={"lr": settings["lr"]}))
        scheduler = build_schedule(optimizer, loop.steps_per_epoch * loop.epochs, tr.warmup, tr.schedule, tr.final_lr)
        position = Position()
        if resume:
            position = _restore(run, plan, model, optimizer, scheduler, generator, context, tr.seed,
                                loop.steps_per_epoch)
        spec_dict = {k: v for k, v in spec.to_json_dict().items() if k != "schema"}
        run.describe(spec_dict, plan, schema)

        def save(at: Position) -> str:
            where = run.save(model, optimizer, scheduler, generator, at.to_dict(), settings)
            context.barrier()   # every process has reached the step saved before any goes on
            return where

        def evaluate_now() -> dict:
            return evaluate(model, eval_set, device=device, exclude_seen=exclude_seen, context=context)
        trackers = open_trackers(run.path, tracking, tr.log_to, experiment=spec.name)
        trackers.log_config({"spec": spec_dict, "settings": settings})
        hooks = Hooks(save=save, evaluate=evaluate_now if eval_set else None, say=log,
                      loggers=[*run.epoch_log(world_size=context.world_size),
                               *(loggers if context.is_main else ()), trackers],
                      saved=str(run) if resume else None, agree=context.any, total=context.all_reduce_sum,
                      selection=_selection(tr, run, position, eval_set))
        try:
            with context.guard("training"):
                outcome = _continue(run, context.wrap(model), train_set, optimizer, scheduler, loop, position, hooks)
        except BaseException:
            trackers.finish(ok=False)
            raise
        finally:
            for logger in hooks.loggers:
                logger.close()
        if outcome.get("already"):
            return outcome["already"]
        result = {**outcome["metrics"], "loss": outcome["loss"], "epochs": position.epoch,
                  "train_seconds": round(position.train_seconds, 3),
                  "train_sessions_per_s": round(position.train_sessions / max(position.train_seconds, 1e-9), 1),
                  "train_sessions": train_set.n_rows, "eval_sessions": eval_set.n_rows if eval_set else 0,
                  "interrupted": outcome["interrupted"], "world_size": context.world_size}
        if hooks.selection is not None:
            result.update(hooks.selection.summary(), weights="last epoch",
                          stopped_early=not outcome["interrupted"] and position.epoch < loop.epochs)
        run.write_metrics(result)
        trackers.finish()
    return result


def _continue(run: RunDirectory, model, train_set, optimizer, scheduler, loop: LoopSettings, position: Position,
              hooks: Hooks) -> dict:
    """Train from `position`; first finish what a resumed run left undone (the evaluation and log record of the
    epoch its checkpoint ends, and metrics.json once every epoch is trained)."""
    metrics = {}
    if run.resume:
        unlogged = hooks.agree(run.unlogged_epoch(position))   # rank 0 reads the log; every process follows
        if unlogged:
            hooks.say(f"{run}: finishing epoch {position.epoch} (its evaluation had not been logged)")
            metrics = end_epoch(position, loop, hooks)
        stopped_early = position.batch == 0 and hooks.selection is not None and hooks.selection.should_stop
        if position.epoch >= loop.epochs or stopped_early:
            saved = run.metrics()
            done = saved and saved.get("epochs") == position.epoch and saved.get("interrupted") is False
            if hooks.agree(bool(not unlogged and done)):
                hooks.say(f"{run} is already trained for {position.epoch} epoch(s)" + (
                    " (early stopping ended it)" if stopped_early else "; pass --epochs above that to continue"))
                return {"already": saved or {}}
            if not unlogged and hooks.evaluate is not None:   # stopped between logging and writing metrics.json
                metrics = hooks.evaluate()
            return {"metrics": metrics, "interrupted": False, "loss": position.finished.get("loss", float("nan"))}
        hooks.say(f"resuming {run} at epoch {position.epoch + 1}, batch {position.batch + 1} (step {position.step})")
    return train_loop(model, train_set, optimizer, scheduler, loop, position, hooks)


def _selection(tr, run: RunDirectory, position: Position, eval_set):
    """Early stopping's bookkeeping (training.early_stopping), replayed from the log of a resumed run."""
    selection = Selection.from_spec(tr.early_stopping)
    if selection is None:
        return None
    if eval_set is None:
        raise UserError("training.early_stopping selects by validation metrics: pass --eval VALID")
    if run.resume:
        selection.replay(epoch_records(run.path / "log.jsonl", position.epoch))
    return selection


def _load_spec(source, schema, data: str):
    from specc.check import compile as compile_plan
    from specc.spec import load_spec
    try:
        return load_spec(source)
    except SpecError as exc:
        if exc.partial is not None:   # report the semantic errors of the rest of the spec too
            compile_plan(source, resolve_training_schema(exc.partial, schema, data))
        raise


def _silent(message: str) -> None:
    """What a process other than rank 0 says: nothing (its errors still raise)."""


def _per_process_batch(batch_size: int, world_size: int, from_spec: bool) -> int:
    """Rows per step on each process: the batch size is the global one, shared evenly."""
    if batch_size % world_size == 0:
        return batch_size // world_size
    message = (f"batch size {batch_size} does not divide evenly over {world_size} processes; the batch size is "
               f"global (each process takes batch_size / {world_size} rows)")
    if from_spec:
        near = batch_size // world_size * world_size or world_size
        raise SpecError([Issue("$.training.batch_size", "batch_not_divisible", message,
                               hint=f"use a multiple of {world_size}, e.g. {near}")])
    raise UserError(f"--batch-size: {message}")


def _restore(run: RunDirectory, plan, model, optimizer, scheduler, generator, context, seed: int,
             steps_per_epoch: int) -> Position:
    """The position of the run's last checkpoint, with its weights and state loaded. A run stopped inside an epoch
    continues only on as many processes as it had (the shares of an epoch depend on them); at an epoch's end
    any number of processes may continue it."""
    was = run.saved_world_size()
    if run.stopped_inside_epoch() and was != context.world_size:
        raise RunError(f"{run} stopped inside an epoch on {was} process(es); resume it on {was} (a run saved at "
                       f"the end of an epoch resumes on any number), not {context.world_size}")
    position = run.restore(plan, model, optimizer, scheduler, generator, steps_per_epoch)
    if not context.is_main:   # the saved epoch sums are all processes' already, counted once on rank 0
        position.loss_sum, position.sessions = 0.0, 0
        generator.manual_seed(seed + context.rank + 7919 * position.step)   # the saved state is rank 0's
    return position


def _open_data(model, data: str, eval_data: str | None, schema, log, context, exclude_seen: bool):
    plan = model.plan
    has_next_item = plan.next_item is not None
    min_train = 2 if has_next_item and plan.masking.kind == "causal" else 1
    train_set = open_for(model, data, schema, min_train, context=context)
    eval_set = open_evaluation(model, eval_data, schema, exclude_seen, context=context) if eval_data else None
    for ds, role in ((train_set, "training"), (eval_set, "evaluation")):
        if ds is not None and ds.n_skipped:
            log(f"{role} data: skipped {ds.n_skipped} sequence(s) too short to use ({ds.n_rows} kept)")
    if has_next_item and plan.next_item.loss.sampler == "popularity":
        counts = train_set.item_counts(plan.next_item.n_items)
        model.next_item.item_counts.copy_(counts.to(model.next_item.item_counts.device))
    return train_set, eval_set


def _say_if_schedule_is_replanned(run: RunDirectory, tr, epochs: int, log) -> None:
    was = run.saved_epochs()
    if was and epochs > was and (tr.schedule != "constant" or tr.warmup > 0):
        log(f"note: extending a {was}-epoch run to {epochs} epochs re-plans its learning-rate schedule "
            f"({tr.schedule}, warm-up {tr.warmup:g}) over {epochs} epochs, so it will not equal a run trained for "
            f"{epochs} epochs from the start")


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


def resolve_device(device: str | None) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return device or ("cuda" if torch.cuda.is_available() else "cpu")
