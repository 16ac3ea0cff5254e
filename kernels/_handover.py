"""The checkout's kernels/ folder under the top-level name `kernels`, which is Hugging Face's package's.

From a source checkout, `python -m ...` and pytest put the repository root on sys.path, so `import kernels`
(transformers imports the hub's kernels package where it is installed; 5.25 on requires it) would find this folder
first. Imported by that name, the folder puts in its place the package found on the rest of sys.path: an import
statement returns what sys.modules holds once the module has run. Where there is none, the folder stays what the
name finds, as it always was (it has no version, so transformers does not take it for the hub's package).
"""
from __future__ import annotations

import importlib
import os
import sys


def hand_over(name: str, init_file: str) -> bool:
    """Whether sys.modules[name] is now the package found outside the checkout."""
    root = os.path.realpath(os.path.dirname(os.path.dirname(init_file)))
    ours = sys.modules.pop(name)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != root]
    try:
        sys.modules[name] = importlib.import_module(name)
        return True
    except ImportError:
        sys.modules[name] = ours
        return False
    finally:
        sys.path[:] = saved
