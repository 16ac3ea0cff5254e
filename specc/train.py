"""`train`: a spec, training data and a run directory in; a trained, evaluated model in the run directory out.

It composes the rooms of training: what is asked (`train_request.py`), what is read (`train_inputs.py`), the run
directory (`run_dir.py`) and continuing it (`train_resume.py`), the optimizer and schedule (`optim.py`), the loop
(`loop.py`, with the selection of `selection.py` and the budget of `time_budget.py`) and evaluation
(`evaluation.py`); under torchrun, the distributed context (`distributed.py`)
says which process this is: each trains on its share of the data with batch_size / world_size rows per step,
gradients are averaged by DistributedDataParallel, and rank 0 alone writes the run directory."""
from __future__ import annotations

from pathlib import Path

import torch

from specc.checkpoint import POINTER
from specc.cpu import keep_freed_memory, slow_bf16_warning
from specc.distributed import DistributedError
from specc.errors import Issue, SpecError, UserError
from specc.evaluation import evaluate
from specc.loop import Hooks, LoopSettings, Position
from specc.mapping_agreement import require_same_ids
from specc.optim import build_optimizer, build_schedule
from specc.run_dir import RunDirectory
from specc.run_log import epoch_records
from specc.time_budget import TimeBudget
from specc.tracking import open_trackers
from specc.train_inputs import load_training_spec, open_training_data, resolve_training_schema
from specc.train_request import TrainRequest
from specc.train_resume import continue_run, restore, selection_for


def train(spec, data, out, eval_data=None, *, context=None, **options) -> dict:
    """Train the spec'd model on `data`, evaluate on `eval_data`, and write the run directory `out`; returns what
    metrics.json holds. `options`: the other fields of `specc.train_request.TrainRequest` (epochs, batch_size, lr,
    resume, max_time, log, ...). `context`: the process's `specc.distributed` context (default: from the
    environment, torchrun's or a single process)."""
    return run_training(TrainRequest(spec, data, out, eval_data, **options), context)


def run_training(request: TrainRequest, context=None) -> dict:
    from specc.distributed import from_environment
    if context is None:
        with from_environment(resolve_device(request.device)) as context:
            return _train(request, context)
    return _train(request, context)


def _train(request: TrainRequest, context) -> dict:
    from specc.builder import build_from_plan
    from specc.check import compile as compile_plan
    budget = TimeBudget(request.max_time) if request.max_time else None
    if request.init_from and request.resume:
        raise UserError("--init-from starts a new run from another run's weights; --resume continues a run: pass one")
    data, out = request.data, request.out
    spec = load_training_spec(request.spec, request.schema, data)
    log = request.log if context.is_main else _silent
    # torchrun restarting the processes after a failure: continue from the last published checkpoint
    resume = request.resume or (context.restart_count > 0 and (Path(out) / POINTER).is_file())
    with RunDirectory(out, resume, say=log, writer=context.is_main) as run:
        schema = resolve_training_schema(spec, request.schema, data, log)
        device = context.device
        if device == "cpu":
            keep_freed_memory()
        tr = spec.training
        settings = _settings(run, request, tr, context.world_size)
        if settings["precision"] == "bf16" and (warning := slow_bf16_warning(device)):
            log(warning)
        per_process = _per_process_batch(settings["batch_size"], context.world_size, request.batch_size is None)
        plan = compile_plan(spec, schema)
        torch.manual_seed(tr.seed)
        model = build_from_plan(plan).to(device)
        if request.init_from:
            from specc.warm_start import warm_start
            require_same_ids(request.init_from, data)
            log(warm_start(model, request.init_from))
        # each process draws its own dropout, masks and negatives
        model.generator = generator = torch.Generator().manual_seed(tr.seed + context.rank)
        train_set, eval_set = open_training_data(model, data, settings["eval"], schema, log, context,
                                                 settings["exclude_seen"])

        _say_if_schedule_is_replanned(run, tr, settings["epochs"], log)
        loop = LoopSettings(epochs=settings["epochs"], batch_size=per_process,
                            steps_per_epoch=train_set.steps(per_process), seed=tr.seed,
                            lr=settings["lr"], clip_grad_norm=tr.clip_grad_norm, bf16=settings["precision"] == "bf16",
                            device=device, eval_every=request.eval_every, checkpoint_every=tr.checkpoint_every,
                            progress=request.progress and context.is_main, world_size=context.world_size)
        optimizer = build_optimizer(model, tr.optimizer.model_copy(update={"lr": settings["lr"]}))
        scheduler = build_schedule(optimizer, loop.steps_per_epoch * loop.epochs, tr.warmup, tr.schedule, tr.final_lr)
        position = Position()
        if resume:
            position = restore(run, plan, model, optimizer, scheduler, generator, context, tr.seed,
                               loop.steps_per_epoch)
        spec_dict = {k: v for k, v in spec.to_json_dict().items() if k != "schema"}
        run.describe(spec_dict, plan, schema)

        def save(at: Position) -> str:
            where = run.save(model, optimizer, scheduler, generator, at.to_dict(), settings)
            context.barrier()   # every process has reached the step saved before any goes on
            return where

        def evaluate_now() -> dict:
            return evaluate(model, eval_set, device=device, exclude_seen=settings["exclude_seen"], context=context)
        trackers = open_trackers(run.path, request.tracking, tr.log_to, experiment=spec.name)
        trackers.log_config({"spec": spec_dict, "settings": settings})
        selection = selection_for(tr, run, position, eval_set)
        hooks = Hooks(save=save, evaluate=evaluate_now if eval_set else None, say=log,
                      loggers=[*run.epoch_log(world_size=context.world_size),
                               *(request.loggers if context.is_main else ()), trackers],
                      saved=str(run) if resume else None, agree=context.any, total=context.all_reduce_sum,
                      selection=selection, keep_best=lambda: run.keep_best(selection.pointer_fields()),
                      out_of_time=budget.spent if budget else None)
        try:
            with context.guard("training"):
                outcome = continue_run(run, context.wrap(model), train_set, optimizer, scheduler, loop, position,
                                       hooks)
                if outcome.get("already"):
                    return outcome["already"]
                metrics, kept = _kept(outcome, hooks, position, run.path / "log.jsonl")
        except DistributedError as exc:   # a process of the run died: say what is kept and how to go on
            trackers.finish(ok=False)
            kept_at = f"{hooks.saved} keeps its last checkpoint" if hooks.saved else "nothing was saved yet"
            raise DistributedError(f"{exc}. {kept_at}: once every process can run, continue with the same command "
                                   "and --resume") from None
        except BaseException:
            trackers.finish(ok=False)
            raise
        finally:
            for logger in hooks.loggers:
                logger.close()
        result = {**metrics, "loss": outcome["loss"], "epochs": position.epoch,
                  "train_seconds": round(position.train_seconds, 3),
                  "train_sessions_per_s": round(position.train_sessions / max(position.train_seconds, 1e-9), 1),
                  "train_sessions": train_set.n_rows, "eval_sessions": eval_set.n_rows if eval_set else 0,
                  "exclude_seen": settings["exclude_seen"],
                  **({"init_from": settings["init_from"]} if settings.get("init_from") else {}),
                  "interrupted": outcome["interrupted"], "stopped": outcome["stopped"], **kept,
                  "world_size": context.world_size}
        if selection is not None:
            result.update(selection.summary(), stopped_early=outcome["stopped"] == "early_stopping")
        run.write_metrics(result)
        trackers.log({f"final/{k}": v for k, v in result.items()}, position.step)   # the kept weights' numbers
        trackers.finish()
    return result


def _settings(run: RunDirectory, request: TrainRequest, tr, world_size: int) -> dict:
    """A resumed run continues with its own settings; a new one with the flags, else the spec's."""
    settings = run.settings({"epochs": request.epochs, "batch_size": request.batch_size, "lr": request.lr,
                             "precision": request.precision, "data": str(Path(request.data).resolve()),
                             # how it is evaluated: a resumed run keeps its validation data and protocol
                             "eval": str(Path(request.eval_data).resolve()) if request.eval_data else None,
                             "exclude_seen": True if request.exclude_seen else None,
                             "init_from": str(Path(request.init_from).resolve()) if request.init_from else None})
    defaults = {"epochs": tr.epochs, "batch_size": tr.batch_size, "lr": tr.optimizer.lr, "precision": tr.precision,
                "exclude_seen": False}
    return {**{k: settings[k] or defaults.get(k) for k in settings}, "world_size": world_size}


def _kept(outcome: dict, hooks: Hooks, position: Position, log: Path) -> tuple[dict, dict]:
    """The metrics of the weights the run keeps (the best epoch's where the selection kept one, else the last), and
    what metrics.json says of them. The last weights are evaluated now where their evaluation is not at hand (a
    stop inside an epoch, or after an epoch whose evaluation was not due); an interrupted run is not evaluated."""
    s = hooks.selection
    if s is not None and s.best is not None:
        loss = next((r["loss"] for r in epoch_records(log, s.best_epoch) if r["epoch"] == s.best_epoch), None)
        return dict(s.best_metrics), {"weights": f"best epoch {s.best_epoch}", "kept_epoch": s.best_epoch,
                                      "loss": loss, "last_loss": outcome["loss"]}
    metrics = outcome["metrics"]
    if not metrics and hooks.evaluate is not None and not outcome["interrupted"]:
        metrics = hooks.evaluate()
    if position.batch == 0:
        return metrics, {"weights": "last epoch", "kept_epoch": position.epoch}
    return metrics, {"weights": f"last step (epoch {position.epoch + 1}, batch {position.batch})", "kept_epoch": None}


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


def _say_if_schedule_is_replanned(run: RunDirectory, tr, epochs: int, log) -> None:
    was = run.saved_epochs()
    if was and epochs > was and (tr.schedule != "constant" or tr.warmup > 0):
        log(f"note: extending a {was}-epoch run to {epochs} epochs re-plans its learning-rate schedule "
            f"({tr.schedule}, warm-up {tr.warmup:g}) over {epochs} epochs, so it will not equal a run trained for "
            f"{epochs} epochs from the start")


def resolve_device(device: str | None) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return device or ("cuda" if torch.cuda.is_available() else "cpu")
