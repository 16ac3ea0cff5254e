"""`specc train --max-time`: a run stopped cleanly at its time budget, resumed to the run it would have been. The
budget's clock is replaced by one that ticks a second per reading (the loop reads it once after every step and
once between epochs), so where a run stops is exact, not a race with the wall clock."""
import itertools
import json

import pytest
import torch
from safetensors.torch import load_file

import specc
import specc.time_budget as time_budget
from specc.checkpoint import published, run_schema
from specc.cli import main
from specc.errors import UserError
from specc.loop import Hooks, LoopSettings, Position, train_loop
from specc.train import train
from tests.test_keep_best import FIRST_IS_BEST, _same_weights, _spec


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from specc.synth import default_schema, synthesize
    folder = tmp_path_factory.mktemp("max_time")
    synthesize(default_schema(), folder, n_train=128, n_valid=40, seed=9)   # 4 steps per epoch of 32
    return folder


@pytest.fixture
def ticking(monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr(time_budget, "clock", lambda: float(next(ticks)))


def _train(folder, out, spec, said=None, **options):
    return train(spec, str(folder / "train.parquet"), str(out), eval_data=str(folder / "valid.parquet"), epochs=3,
                 progress=False, log=(said.append if said is not None else lambda m: None), **options)


@pytest.fixture(scope="module")
def uninterrupted(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    return out, _train(synth, out, _spec(FIRST_IS_BEST))


def test_a_budget_spent_inside_an_epoch_stops_after_the_step_and_resume_finishes_the_same_run(synth, tmp_path,
                                                                                             ticking, uninterrupted):
    run, said = tmp_path / "run", []
    # readings: the start (0), steps 1-4 (1-4), between epochs (5), steps 5, 6 (6, 7): spent at 7 s, after step 6
    stopped = _train(synth, run, _spec(FIRST_IS_BEST), said, max_time=7)
    assert (stopped["stopped"], stopped["interrupted"], stopped["epochs"]) == ("max_time", False, 1)
    assert (published(run)["step"], published(run)["batch"]) == (6, 2)
    assert any(line.startswith("stopped at --max-time: saved") for line in said)
    # the kept weights are the best epoch's, and so are the metrics
    assert (stopped["weights"], stopped["kept_epoch"]) == ("best epoch 1", 1)
    assert json.loads((run / "metrics.json").read_text())["stopped"] == "max_time"
    reference, full = uninterrupted
    first = json.loads((reference / "log.jsonl").read_text().splitlines()[0])
    assert stopped["ndcg@10"] == first["ndcg@10"]
    resumed = _train(synth, run, _spec(FIRST_IS_BEST), resume=True)
    assert (resumed["stopped"], resumed["epochs"], resumed["kept_epoch"]) == ("epochs", 3, 1)
    assert _same_weights(specc.load(run), specc.load(reference))
    latest = [load_file(str(published(r)["path"] / "model.safetensors")) for r in (run, reference)]
    assert all(torch.equal(latest[0][k], latest[1][k]) for k in latest[1])   # the latest checkpoints too
    assert [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()] == \
        [json.loads(line)["loss"] for line in (reference / "log.jsonl").read_text().splitlines()]
    assert {k: v for k, v in resumed.items() if "@" in k} == {k: v for k, v in full.items() if "@" in k}


def test_a_budget_spent_at_an_epoch_end_stops_before_the_next_and_evaluates_the_last_weights(synth, tmp_path,
                                                                                            ticking):
    run, said = tmp_path / "run", []
    stopped = _train(synth, run, _spec(), said, max_time=5)   # spent at the reading between epochs 1 and 2
    assert (stopped["stopped"], stopped["epochs"], stopped["weights"], stopped["kept_epoch"]) == \
        ("max_time", 1, "last epoch", 1)
    assert published(run)["step"] == 4 and "stopped at --max-time after epoch 1; continue with --resume" in said
    assert stopped["ndcg@10"] == json.loads((run / "log.jsonl").read_text())["ndcg@10"]
    # a budget of its own for the resumed command: another 5 s is epoch 2, then it stops again
    again = _train(synth, run, _spec(), resume=True, max_time=5)
    assert (again["stopped"], again["epochs"], published(run)["step"]) == ("max_time", 2, 8)


def test_without_selection_a_stop_inside_an_epoch_evaluates_the_weights_it_saved(synth, tmp_path, ticking):
    from specc.evaluation import evaluate, open_for
    run = tmp_path / "run"
    stopped = _train(synth, run, _spec(), max_time=2)
    assert (stopped["weights"], stopped["kept_epoch"], published(run)["step"]) == \
        ("last step (epoch 1, batch 2)", None, 2)
    model = specc.load(run)
    valid = open_for(model, str(synth / "valid.parquet"), run_schema(run), 2)
    assert stopped["ndcg@10"] == evaluate(model, valid)["ndcg@10"]


def test_every_process_stops_after_the_same_step_when_any_finds_the_budget_spent():
    """Another process's budget is spent at its third step; this one's never is: both stop after step 3, for
    --max-time (no process was interrupted)."""
    calls = []

    def agree(flag: bool) -> bool:   # context.any over this process and the simulated other
        calls.append(flag)
        return flag or len(calls) == 3

    model = torch.nn.Linear(2, 1)

    class Rows:
        def batches(self, batch_size, shuffle, seed, epoch):
            for _ in range(4):
                yield {"x": torch.ones(batch_size, 2)}
    loss_model = type("M", (torch.nn.Module,), {"forward": lambda self, b: {"loss": model(b["x"]).pow(2).mean()}})()
    loss_model.add_module("linear", model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saved = []
    hooks = Hooks(save=lambda at: saved.append(at.step) or "run", say=lambda m: None, agree=agree,
                  out_of_time=lambda: False)
    done = train_loop(loss_model, Rows(), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                      LoopSettings(epochs=2, batch_size=2, steps_per_epoch=4, seed=0, lr=0.1), Position(), hooks)
    assert (done["stopped"], saved, calls) == ("max_time", [3], [False, False, False, False])


def test_a_bad_max_time_is_a_located_error(synth, tmp_path, capsys):
    for bad in ("15x", "0", "-2m", ""):
        with pytest.raises(SystemExit) as exit_:
            main(["train", "spec.json", "--data", "d", "--out", "o", f"--max-time={bad}"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "--max-time" in err and "duration" in err, err
    with pytest.raises(UserError, match="max_time: expected a positive number of seconds"):
        _train(synth, tmp_path / "run", _spec(), max_time=-1)
    assert not (tmp_path / "run").exists()
