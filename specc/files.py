"""Reading and writing the files specc is given or keeps: strict JSON, atomic writes."""
from __future__ import annotations

import json
import math
from pathlib import Path


def json_text(record: dict, **kwargs) -> str:
    """JSON without NaN/Infinity, which are not JSON: an undefined metric (e.g. AUC with labels of one class) is null."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()},
                      allow_nan=False, **kwargs)


def atomic_write_text(path: Path, text: str) -> None:
    """`path` holds either its old content or `text`, never a part of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
