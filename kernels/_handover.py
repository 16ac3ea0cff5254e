"""The checkout's kernels/ folder under the top-level name `kernels`, which is Hugging Face's package's.

From a source checkout, `python -m ...` and pytest put the repository root on sys.path, so `import kernels`
(transformers >= 5.25 imports the hub's kernels package) would find this folder first. Imported by that name, the
folder puts in its place the package found on the rest of sys.path, or fails as if the name were absent: an import
statement returns what sys.modules holds once the module has run.
"""
from __future__ import annotations

import importlib
import os
import sys


def hand_over(name: str, init_file: str) -> None:
    root = os.path.realpath(os.path.dirname(os.path.dirname(init_file)))
    del sys.modules[name]
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != root]
    try:
        sys.modules[name] = importlib.import_module(name)
    except ImportError:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name) from None
    finally:
        sys.path[:] = saved
