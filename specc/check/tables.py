"""inputs.embeddings: one table per categorical feature or shared group, with its rows and dim."""
from __future__ import annotations

import math

from specc.check.context import Context
from specc.plan import TablePlan
from specc.schema import Column


def resolve_tables(ctx: Context, features: list[Column]) -> tuple[dict[str, TablePlan], dict[str, str]]:
    """The tables by name, and the table of each categorical feature."""
    emb = ctx.spec.inputs.embeddings
    categorical = [c for c in features if c.is_categorical]
    _check_dims(ctx, {c.name for c in categorical})
    table_of = _table_of(ctx, categorical, {c.name for c in features})
    members: dict[str, list[Column]] = {}
    for col in categorical:
        members.setdefault(table_of[col.name], []).append(col)
    tables: dict[str, TablePlan] = {}
    for t, cols in members.items():
        rows = max(c.cardinality for c in cols)
        dims = {emb.dims[c.name] for c in cols if c.name in emb.dims}
        if t in emb.dims:    # a shared table's own dim wins over its columns'
            dims = {emb.dims[t]}
        if len(dims) > 1:
            ctx.error(f"$.inputs.embeddings.shared.{t}", "shape_mismatch",
                      f"columns sharing table {t!r} have different dims ({', '.join(map(str, sorted(dims)))})",
                      f"set one dim for the shared table: embeddings.dims.{t}", cols[0].name)
        if dims:
            dim = max(dims)
        elif emb.infer is not None:
            dim = max(1, math.ceil(rows ** 0.25 * emb.infer.multiplier))
        else:
            dim = emb.default_dim
        tables[t] = TablePlan(t, tuple(c.name for c in cols), rows, dim)
    return tables, table_of


def _check_dims(ctx: Context, categorical_names: set[str]) -> None:
    emb = ctx.spec.inputs.embeddings
    for col_name in emb.dims:
        if col_name not in categorical_names and col_name not in emb.shared:
            if col_name in ctx.schema:
                ctx.error(f"$.inputs.embeddings.dims.{col_name}", "not_a_feature",
                          f"{col_name!r} has a dim but is not a categorical feature", column=col_name)
            else:
                ctx.column(col_name, f"$.inputs.embeddings.dims.{col_name}")


def _table_of(ctx: Context, categorical: list[Column], names: set[str]) -> dict[str, str]:
    table_of: dict[str, str] = {c.name: c.name for c in categorical}
    for table, cols in ctx.spec.inputs.embeddings.shared.items():
        path = f"$.inputs.embeddings.shared.{table}"
        for j, name in enumerate(cols):
            col = ctx.schema[name] if name in ctx.schema else ctx.column(name, f"{path}[{j}]")
            if col is None:
                continue
            if name not in names or not col.is_categorical:
                ctx.error(f"{path}[{j}]", "not_categorical",
                          f"{name!r} is not a categorical feature of this model", column=name)
            elif table_of[name] != name:
                ctx.error(f"{path}[{j}]", "shared_twice",
                          f"{name!r} is already in shared table {table_of[name]!r}", column=name)
            else:
                table_of[name] = table
        if table in names and table not in cols:
            ctx.error(path, "table_name_clash", f"shared table {table!r} has the name of another feature's table",
                      "pick another table name")
    return table_of
