"""How each column the model reads is fed: ids or floats, list or scalar, the range its values must keep.

`plan_columns` decides it from the schema and the arrow types of the first file's footer, listing every column
that specc cannot feed (missing, strings, nested lists, floats or booleans where ids are wanted, list vs scalar).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from specc.errors import did_you_mean
from specc.schema import Column, Schema


def arrow_kind(t) -> tuple[bool | None, str]:
    """(is_list, element kind) of an arrow type; kind one of int, float, bool, string, other."""
    import pyarrow as pa
    is_list = False
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        is_list, t = True, t.value_type
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return None, "nested list"
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return is_list, "int"
    if pa.types.is_floating(t):
        return is_list, "float"
    if pa.types.is_boolean(t):
        return is_list, "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        return is_list, "string"
    return is_list, str(t)


@dataclass
class ColumnPlan:
    name: str
    is_list: bool
    floating: bool                 # output float32 (else int64)
    cardinality: int | None
    continuous: bool
    domain: tuple[int, int] | None = None   # allowed [min, max] of a non-categorical int column (int_domain)
    binary: bool = False                     # a non-categorical 0/1 column: every value must be exactly 0 or 1

    @property
    def null_fill(self):
        """What a null is read as while checking: a value that passes every check of the column, since the null
        itself is reported."""
        if self.domain is not None:
            return self.domain[0]
        return 1 if self.cardinality is not None and self.cardinality > 1 else 0


def plan_columns(schema: Schema, columns: Sequence[str], arrow_schema, problems: list[str],
                 unusable: set[str] = frozenset()) -> list[ColumnPlan]:
    """The plan of each column that can be fed; a problem in `problems` for each other one. Columns in `unusable`
    (stored differently across files, already reported) are left out silently."""
    plans = []
    data_names = list(arrow_schema.names)
    for name in columns:
        if name in unusable:
            continue
        if name not in data_names:
            near = did_you_mean(name, data_names)
            problems.append(f"column {name!r} is not in the data" + (f" ({near})" if near else
                            f"; the data has {', '.join(map(repr, data_names[:12]))}"
                            + (" ..." if len(data_names) > 12 else "")))
            continue
        is_list, kind = arrow_kind(arrow_schema.field(name).type)
        col: Column | None = schema[name] if name in schema else None
        if is_list is None or kind not in ("int", "float", "bool"):
            problems.append(f"column {name!r} holds {arrow_schema.field(name).type}, which specc cannot feed to a "
                            "model: encode it as integer ids (e.g. NVTabular Categorify) or floats")
            continue
        if col is None:
            plans.append(ColumnPlan(name, bool(is_list), kind == "float", None, kind == "float"))
            continue
        if col.is_list and not is_list:
            problems.append(f"column {name!r} is a scalar in the data but a list (sequence) in the schema")
            continue
        if not col.is_list and is_list:
            problems.append(f"column {name!r} is a list in the data but a scalar in the schema "
                            "(tag it `list` / give it a value_count, or use a scalar column)")
            continue
        wants_ids = col.is_categorical or col.cardinality is not None or (
            col.dtype in ("int", "bool") and not col.is_continuous)
        if col.is_categorical and kind == "bool" and "binary_classification" not in col.tags:
            problems.append(f"column {name!r} holds booleans but the schema says it is categorical: categorical "
                            "columns must hold integer ids in [0, cardinality)")
            continue
        if col.is_categorical and kind == "float":
            problems.append(f"column {name!r} holds floats ({arrow_schema.field(name).type}) but the schema says it "
                            "is categorical: categorical columns must hold integer ids in [0, cardinality)")
            continue
        floating = col.is_continuous or col.dtype == "float" or (kind == "float" and not wants_ids)
        binary = col.cardinality is None and ("binary_classification" in col.tags or col.dtype == "bool")
        plans.append(ColumnPlan(name, col.is_list, floating, col.cardinality, col.is_continuous or floating,
                                 None if col.cardinality is not None else col.int_range, binary))
    return plans
