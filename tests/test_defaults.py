"""The defaults are the ones benchmarks/RESULTS.md documents (chosen on the quality matrix), the learning-rate
schedules are what their names say, and the thread count follows the documented rule."""
import json
import math
import re
from pathlib import Path

import pytest
import torch

from specc.cpu import default_threads, use_threads
from specc.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = {"specc": 1, "inputs": {"max_sequence_length": 8},
           "body": {"kind": "transformer", "architecture": "native", "d_model": 8, "n_head": 1, "n_layer": 1},
           "tasks": [{"kind": "next_item"}]}


def documented_defaults() -> dict:
    """`| `dotted.key` | `json value` |` rows of the table after the defaults marker in RESULTS.md."""
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    section = text.split("<!-- defaults table: tests/test_defaults.py -->", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)` \| `([^`]+)` \|", section, flags=re.M)
    assert len(rows) >= 8, "the defaults table in benchmarks/RESULTS.md is missing or too short"
    return {key: json.loads(value) for key, value in rows}


@pytest.mark.parametrize("key", sorted(documented_defaults()))
def test_each_default_is_the_documented_one(key):
    node = load_spec(MINIMAL).to_json_dict()
    for part in key.split("."):
        node = node[part]
    assert node == documented_defaults()[key]


def test_docs_spec_md_names_the_training_defaults():
    docs = (ROOT / "docs" / "spec.md").read_text().split("## `training`", 1)[1].split("\n## ", 1)[0]
    d = documented_defaults()
    for key in ("training.schedule", "training.optimizer.lr", "training.batch_size", "training.warmup"):
        assert json.dumps(d[key]).strip('"') in docs, f"docs/spec.md does not say {key} = {d[key]}"


def _factors(kind: str, warmup: float, final_lr: float = 0.0, total: int = 10) -> list[float]:
    from specc.optim import build_schedule as _schedule
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = _schedule(opt, total, warmup, kind, final_lr)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant_keeps_the_learning_rate_after_warm_up():
    assert _factors("constant", 0.0) == [1.0] * 10
    assert _factors("constant", 0.2)[:3] == [0.5, 1.0, 1.0]


def test_linear_and_cosine_decay_to_the_final_share():
    linear = _factors("linear", 0.0, final_lr=0.1)
    cosine = _factors("cosine", 0.0, final_lr=0.1)
    for f in (linear, cosine):
        assert f[0] == pytest.approx(1.0) and all(a >= b for a, b in zip(f, f[1:])) and f[-1] > 0.1
    left = (10 - 5) / 9   # the share of the decay still ahead at step 5 (1 warm-up step of 10)
    assert linear[5] == pytest.approx(0.1 + 0.9 * left)
    assert cosine[5] == pytest.approx(0.1 + 0.9 * 0.5 * (1 - math.cos(math.pi * left)))
    assert _factors("linear", 0.0)[-1] == pytest.approx(1 / 9)


def test_default_threads_follow_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3


@pytest.mark.parametrize("cpus, threads", [(1, 1), (2, 1), (4, 2), (8, 4), (64, 4)])
def test_default_threads_are_half_the_cpus_from_1_to_4(monkeypatch, cpus, threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)))
    assert default_threads() == threads


@pytest.mark.parametrize("command", [["train", "missing.json", "--data", "d", "--out", "o"],
                                     ["evaluate", "missing-run", "--data", "d"],
                                     ["recommend", "missing-run", "--data", "d"]])
def test_threads_flag_sets_torch_threads(command, tmp_path, monkeypatch):
    from specc.cli import main
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    try:
        assert main(command + ["--threads", "2"]) == 1   # the missing file is reported after the threads are set
        assert torch.get_num_threads() == 2
        use_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("avx512_bf16, amx, warned", [(False, False, True), (True, False, False),
                                                      (False, True, False)])
def test_bf16_on_a_cpu_without_bf16_arithmetic_is_warned_about(monkeypatch, avx512_bf16, amx, warned):
    from specc.cpu import slow_bf16_warning
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    warning = slow_bf16_warning("cpu")
    assert (warning is not None) == warned
    if warned:
        assert "slower than in fp32" in warning
    assert slow_bf16_warning("cuda:0") is None


def test_training_in_bf16_on_such_a_cpu_says_so_in_its_log(monkeypatch, tmp_path):
    from specc.synth import default_schema, synthesize
    from specc.train import train
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    synthesize(default_schema(), tmp_path / "data", n_train=40, n_valid=8, seed=0)
    said: list[str] = []
    train(dict(MINIMAL, training={"epochs": 1, "batch_size": 16}), str(tmp_path / "data" / "train.parquet"),
          str(tmp_path / "run"), precision="bf16", log=said.append, progress=False)
    assert any("no bf16 arithmetic" in line for line in said)


def test_more_threads_than_cpus_are_warned_about(monkeypatch, capsys):
    from specc import cpu
    before = torch.get_num_threads()
    monkeypatch.setattr(cpu, "usable_cpus", lambda: 2)
    try:
        assert use_threads(64) == 64 and "--threads 64 on 2 CPU(s)" in capsys.readouterr().err
        assert use_threads(2) == 2 and capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(before)

