"""masking: whether the masking can train the tasks (the body's side is checked in body.py)."""
from __future__ import annotations

from specc.check.context import Context
from specc.plan import MaskingPlan


def check_masking(ctx: Context) -> MaskingPlan:
    m = ctx.spec.masking
    has_next_item = any(t.kind == "next_item" for t in ctx.spec.tasks)
    if m.kind == "none" and has_next_item:
        ctx.error("$.masking", "masking_mismatch", "masking 'none' cannot train a next_item task",
                  "use causal (or mlm/plm/rtd) masking")
    if m.kind == "causal" and has_next_item and ctx.spec.inputs.max_sequence_length < 2:
        ctx.error("$.inputs.max_sequence_length", "masking_mismatch",
                  "causal next-item training needs sequences of at least 2 items (one to predict from)",
                  "raise max_sequence_length")
    if m.kind in ("mlm", "plm", "rtd") and not has_next_item:
        ctx.error("$.masking", "masking_mismatch", f"masking {m.kind!r} trains a next_item task; there is none",
                  "add a next_item task or use masking causal/none")
    return MaskingPlan(kind=m.kind, probability=getattr(m, "probability", 0.0),
                       max_span_length=getattr(m, "max_span_length", 0),
                       sample_from_batch=getattr(m, "sample_from_batch", False),
                       discriminator_weight=getattr(m, "discriminator_weight", 0.0))
