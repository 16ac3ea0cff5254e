"""The package: version, help texts, shipped examples, what CI runs, and a clean working directory."""
import argparse
import fnmatch
import re
import sys
import tomllib
from pathlib import Path

import pytest

import specc
from specc import example_specs as examples
from specc.cli import _parser, main

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"specc {specc.__version__}"
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "specc.__version__"}


def _subparsers(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _subparsers(sub, prefix + (name,))


def test_every_option_of_every_command_shows_its_default(capsys):
    commands = list(_subparsers(_parser()))
    assert {c for c, _ in commands} >= {("compile",), ("train",), ("evaluate",), ("recommend",), ("export",),
                                        ("serve",), ("report",), ("examples",), ("data", "synth")}
    for command, sub in commands:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.required:   # flags, -h, required options
                continue
            flag = f"specc {' '.join(command)} {action.option_strings[-1]}"
            assert action.help, f"{flag}: no help"   # which says what happens without the option
            if action.default is not None and action.default is not False:
                assert f"(default: {action.default})" in text or f"default: {action.default}" in text, flag


def test_the_shipped_examples_are_the_repositorys_specs(capsys):
    assert examples.names() == sorted(p.stem for p in (ROOT / "specs").glob("*.json"))
    assert main(["examples", "sasrec"]) == 0
    assert Path(capsys.readouterr().out.strip()) == (ROOT / "specs" / "sasrec.json").resolve()
    assert main(["examples"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(examples.names())
    assert main(["examples", "sasrek"]) == 1
    assert "did you mean 'sasrec'" in capsys.readouterr().err


def test_compile_an_example(capsys):
    assert main(["compile", "--example", "xlnet_clm"]) == 0
    assert "xlnet" in capsys.readouterr().out
    assert main(["compile", "--example", "sasrec", str(ROOT / "specs" / "sasrec.json")]) == 2
    assert main(["compile"]) == 2


def test_an_installed_package_finds_its_examples_inside_itself(tmp_path, monkeypatch):
    (tmp_path / "examples" / "schemas").mkdir(parents=True)
    (tmp_path / "examples" / "mine.json").write_text("{}")
    monkeypatch.setattr(examples, "_HERE", tmp_path)
    assert examples.names() == ["mine"] and examples.path("mine") == tmp_path / "examples" / "mine.json"


def test_every_file_under_specs_ships_in_the_wheel():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"]["specc.examples"] == "specs"
    data = setuptools["package-data"]
    for path in (ROOT / "specs").rglob("*"):
        if path.is_file():
            package = ".".join(("specc.examples", *path.relative_to(ROOT / "specs").parent.parts))
            assert package in setuptools["packages"], path
            assert any(fnmatch.fnmatch(path.name, pattern) for pattern in data.get(package, [])), path


def test_every_subpackage_is_packaged():
    setuptools = PYPROJECT["tool"]["setuptools"]
    for init in (ROOT / "specc").rglob("__init__.py"):
        package = ".".join(init.parent.relative_to(ROOT).parts)
        assert package in setuptools["packages"], f"{package} is missing from [tool.setuptools] packages"


def _readme_commands() -> list[str]:
    quickstart = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quickstart, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_what_the_readme_says():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = _readme_commands()
    assert len(commands) == 3   # install; the main job; the tests
    install, job, tests = commands
    venv, install = install.split(" && . .venv/bin/activate && ")
    for command in (venv, install, tests):
        assert command in ci, command
    assert job + " --quiet" in ci   # the main job, without its progress bar in a log
    assert "-c constraints.txt" not in ci   # the metadata alone installs


@pytest.mark.slow
def test_nothing_is_written_to_the_working_directory(tmp_path, monkeypatch):
    """Train, export and report with the outputs elsewhere: the current directory stays empty (a graph saved to
    str(io.BytesIO()) once left '<_io.BytesIO object at 0x...>' files in the repository)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "synth", "--out", str(data), "--train", "64", "--valid", "16"]) == 0
    assert main(["train", str(ROOT / "specs" / "xlnet_clm.json"), "--data", str(data / "train.parquet"), "--eval",
                 str(data / "valid.parquet"), "--out", str(run), "--epochs", "1", "--quiet"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    assert main(["report", str(run)]) == 0
    assert list(cwd.iterdir()) == []


def test_python_dash_m_specc_runs_the_command_line():
    import subprocess
    result = subprocess.run([sys.executable, "-m", "specc", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == f"specc {specc.__version__}"


_IMPORT_BOTH = ("import kernels, specc.kernels; "
                "print(getattr(kernels, 'MARK', None), specc.kernels.linear_cross_entropy_cpu.__name__)")


def test_the_checkouts_kernels_folder_leaves_the_top_level_name_to_hugging_faces_package(tmp_path):
    """From the repository root (on sys.path first, as under `python -m` and pytest), `import kernels` is the
    installed `kernels` package that transformers >= 5.25 imports, and specc.kernels is still specc's."""
    import os
    import subprocess
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("MARK = 'hub'\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}   # after the root, which `python -c` puts first
    both = subprocess.run([sys.executable, "-c", _IMPORT_BOTH], capture_output=True, text=True, cwd=ROOT, env=env)
    assert both.returncode == 0, both.stderr
    assert both.stdout.split() == ["hub", "linear_cross_entropy_cpu"]
    # with this interpreter's own packages only, transformers sees the same from the root as from elsewhere
    which = ("import transformers.activations\n"
             "from transformers.utils.import_utils import is_kernels_available\n"
             "import specc.kernels\nprint(is_kernels_available())")
    here, elsewhere = (subprocess.run([sys.executable, "-c", which], capture_output=True, text=True, cwd=cwd)
                       for cwd in (ROOT, tmp_path / "kernels"))
    assert here.returncode == 0, here.stderr
    assert here.stdout == elsewhere.stdout
