"""specc: a declarative model-spec compiler for sequential and session-based recommendation."""
import os as _os

__version__ = "0.1.0"

# In a source checkout the kernels live in the top-level kernels/ folder (see DESIGN.md); an installed
# wheel has them at specc/kernels. Let `import specc.kernels` find either.
_here = _os.path.dirname(__file__)
if not _os.path.isdir(_os.path.join(_here, "kernels")) and _os.path.isfile(
        _os.path.join(_here, _os.pardir, "kernels", "__init__.py")):
    __path__.append(_os.path.join(_here, _os.pardir))  # noqa: F821  (the package's own __path__)

from specc.errors import DataError, Issue, SpecError, UserError  # noqa: E402
from specc.schema import Column, Schema, load_schema  # noqa: E402
from specc.spec import ModelSpec, load_spec  # noqa: E402
from specc.check import compile  # noqa: E402,A004
from specc.prepare.schema_file import write_schema  # noqa: E402
from specc.plan import Plan  # noqa: E402


def build(spec, schema=None, kernels: str = "auto"):
    """Compile `spec` (path, JSON string, dict or ModelSpec) against `schema` and return a specc.Model."""
    from specc.builder import build as _build
    return _build(spec, schema, kernels)


def load(run_dir, device=None):
    """The trained model of a run directory (`specc train --out RUN_DIR`), in eval mode."""
    from specc.checkpoint import load as _load
    return _load(run_dir, device=device)


def __getattr__(name):
    if name == "Model":   # torch is imported only when a model is needed
        from specc.model import Model
        return Model
    raise AttributeError(f"module 'specc' has no attribute {name!r}")


__all__ = ["__version__", "Issue", "SpecError", "DataError", "UserError", "Column", "Schema", "ModelSpec", "Plan",
           "load_spec", "load_schema", "write_schema", "compile", "build", "load", "Model"]
