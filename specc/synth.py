"""Built-in example data with real sequential structure (placeholder; filled in below)."""
from __future__ import annotations

from specc.schema import Column, Schema


def default_schema() -> Schema:
    """The columns of specs/schemas/ecommerce.pbtxt, built in Python (an installed wheel has no specs/)."""
    f = frozenset
    return Schema((
        Column("session_id", f({"session", "id"}), "int"),
        Column("item_id-list", f({"item", "id", "categorical", "list"}), "int", True, 1000, (1, 20)),
        Column("category-list", f({"item", "categorical", "list"}), "int", True, 50, (1, 20)),
        Column("price-list", f({"item", "continuous", "list"}), "float", True, None, (1, 20)),
        Column("weekday", f({"context", "categorical"}), "int", False, 8),
        Column("user_age", f({"user", "continuous"}), "float"),
        Column("purchase", f({"binary_classification", "target"}), "int"),
        Column("revenue", f({"regression", "target"}), "float"),
    ), source=None)
