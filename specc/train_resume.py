"""Continuing a run (`specc train --resume`): its checkpoint restored, what it left undone finished, its model
selection replayed from log.jsonl and its best checkpoint kept as an uninterrupted run keeps it."""
from __future__ import annotations

from specc.checkpoint import RunError
from specc.errors import UserError
from specc.loop import Hooks, LoopSettings, Position, end_epoch, outcome, train_loop
from specc.run_dir import RunDirectory
from specc.run_log import epoch_records
from specc.selection import Selection


def continue_run(run: RunDirectory, model, train_set, optimizer, scheduler, loop: LoopSettings, position: Position,
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
            # stopped between logging and writing metrics.json: the kept weights are evaluated again if need be
            return outcome(metrics, "early_stopping" if stopped_early else "epochs",
                           position.finished.get("loss", float("nan")))
        hooks.say(f"resuming {run} at epoch {position.epoch + 1}, batch {position.batch + 1} (step {position.step})")
    return train_loop(model, train_set, optimizer, scheduler, loop, position, hooks)


def selection_for(tr, run: RunDirectory, position: Position, eval_set) -> Selection | None:
    """Early stopping's bookkeeping (training.early_stopping), replayed from the log of a resumed run."""
    selection = Selection.from_spec(tr.early_stopping)
    if selection is None:
        return None
    if eval_set is None:
        raise UserError("training.early_stopping selects by validation metrics: pass --eval VALID")
    if run.resume:
        selection.replay(epoch_records(run.path / "log.jsonl", position.epoch))
        _keep_the_replayed_best(run, selection, position)
    return selection


def _keep_the_replayed_best(run: RunDirectory, selection: Selection, position: Position) -> None:
    """best.json names the log's best epoch, unless the run was killed between that epoch's log record and
    best.json: its checkpoint is then the published one, kept now."""
    if not run.writer or selection.best is None or run.best_epoch() == selection.best_epoch:
        return
    if position.batch == 0 and position.epoch == selection.best_epoch:
        run.keep_best(selection.pointer_fields())
        return
    raise RunError(f"{run}: log.jsonl selects epoch {selection.best_epoch} by {selection.metric}, but its checkpoint "
                   f"was not kept (best.json names {run.best_epoch() or 'none'}; was training.early_stopping added "
                   "after the run began?): start a new run to select by validation")


def restore(run: RunDirectory, plan, model, optimizer, scheduler, generator, context, seed: int,
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
