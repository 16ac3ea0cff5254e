"""`specc.write_schema`: a Merlin schema file from plain column descriptions."""
from __future__ import annotations

import os
from typing import Iterable, Mapping

from specc.schema import Column, Schema, load_schema, save_schema


def write_schema(columns: "Schema | Iterable[Column | Mapping]", path: "str | os.PathLike") -> str:
    """Write a `schema.pbtxt` (TF-metadata protobuf text, as NVTabular writes it) that merlin-core,
    Transformers4Rec and `specc.load_schema` read, and return its path.

    `columns` is a `specc.Schema` or column descriptions such as
    `{"name": "item_id-list", "tags": ["item_id", "categorical", "list"], "dtype": "int", "is_list": True,
    "cardinality": 1001, "value_count": [2, 50]}`: `cardinality` is the embedding table's size, ids
    0..cardinality-1 with 0 the padding id (written as `int_domain { min: 0 max: cardinality-1 }`);
    `dtype` is one of int, float, bool, string. `path` is a file, or a folder to write `schema.pbtxt` into.
    The file is read back before returning, so a schema that would not load is never left behind.
    """
    schema = columns if isinstance(columns, Schema) else Schema.from_columns(list(columns))
    written = save_schema(schema, path)
    try:
        load_schema(written)
    except BaseException:
        os.remove(written)
        raise
    return written
