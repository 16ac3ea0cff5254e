"""size: parameters no machine can hold are a spec or schema error at compile time, not an allocation failure."""
from __future__ import annotations

from specc.check.context import Context
from specc.plan import Plan

MAX_PARAMETER_BYTES = 1 << 40   # 1 TiB of float32 weights: beyond what specc can allocate, even sharded


def check_size(ctx: Context, plan: Plan) -> None:
    size = plan.parameters * 4
    if size <= MAX_PARAMETER_BYTES:
        return
    table = max(plan.inputs.tables, key=lambda t: t.rows * t.dim, default=None)
    names = list(ctx.spec.inputs.features or [])
    path = f"$.inputs.features[{names.index(table.columns[0])}]" if table and table.columns[0] in names else "$"
    biggest = f"; the largest table, {table.name!r}, has {table.rows:,} rows x {table.dim}" if table else ""
    ctx.error(path, "too_large", f"the model has {plan.parameters:,} parameters ({size / 2 ** 40:,.1f} TiB in "
              f"float32), more than specc can allocate (1 TiB){biggest}",
              "check the column's cardinality (int_domain.max) in the schema, or lower its embedding dim",
              table.columns[0] if table else None)
