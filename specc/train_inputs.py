"""What a training run reads: the spec (every error of it at once), the schema, and the training and validation
data opened for the model."""
from __future__ import annotations

from pathlib import Path

from specc.errors import SpecError, UserError
from specc.evaluation import open_evaluation, open_for
from specc.mapping_agreement import require_same_preparation


def load_training_spec(source, schema, data: str):
    from specc.check import compile as compile_plan
    from specc.spec import load_spec
    try:
        return load_spec(source)
    except SpecError as exc:
        if exc.partial is not None:   # report the semantic errors of the rest of the spec too
            compile_plan(source, resolve_training_schema(exc.partial, schema, data))
        raise


def resolve_training_schema(spec, schema_arg, data_path: str, log=None):
    """The --schema flag, else schema.pbtxt beside the data (prepared data describe themselves: their id ranges and
    columns), else the spec's schema. `log` hears which one was taken when the spec names another."""
    from specc.check import resolve_schema, spec_schema_path
    from specc.schema import load_schema
    if schema_arg:
        return resolve_schema(spec, schema_arg)
    beside = schema_beside(data_path)
    if beside is None:
        if spec.schema_path:
            return resolve_schema(spec, None)
        raise UserError(f"no schema: pass --schema, name one in the spec, or put schema.pbtxt beside {data_path}")
    schema, named = load_schema(str(beside)), spec_schema_path(spec)
    if log is not None and named is not None and _other_columns(named, schema):
        log(f"schema: {beside}, the data's own (the spec names {spec.schema_path}; --schema chooses another)")
    return schema


def _other_columns(path: Path, schema) -> bool:
    """Whether the schema file at `path` describes other columns than `schema` (or cannot be read)."""
    from specc.schema import load_schema
    try:
        return load_schema(str(path)).columns != schema.columns
    except UserError:   # SpecError is one: a missing or broken file is not the data's schema either
        return True


def schema_beside(data_path: str) -> Path | None:
    """schema.pbtxt in the data's folder or the one above it (`specc data prepare` writes DIR/schema.pbtxt beside
    DIR/train, DIR/valid and DIR/test)."""
    data = Path(data_path)
    folder = data if data.is_dir() else data.parent
    return next((f / "schema.pbtxt" for f in (folder, folder.parent) if (f / "schema.pbtxt").is_file()), None)


def open_training_data(model, data: str, eval_data: str | None, schema, log, context, exclude_seen: bool = False):
    plan = model.plan
    has_next_item = plan.next_item is not None
    min_train = 2 if has_next_item and plan.masking.kind == "causal" else 1
    train_set = open_for(model, data, schema, min_train, context=context)
    if eval_data:
        require_same_preparation(data, eval_data)
    eval_set = open_evaluation(model, eval_data, schema, exclude_seen, context=context) if eval_data else None
    for ds, role in ((train_set, "training"), (eval_set, "evaluation")):
        if ds is not None and ds.n_skipped:
            log(f"{role} data: skipped {ds.n_skipped} sequence(s) too short to use ({ds.n_rows} kept)")
    if has_next_item and plan.next_item.loss.sampler == "popularity":
        counts = train_set.item_counts(plan.next_item.n_items)
        model.next_item.item_counts.copy_(counts.to(model.next_item.item_counts.device))
    return train_set, eval_set
