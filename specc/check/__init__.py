"""Semantic check: bind a ModelSpec to a Schema and resolve it into a Plan, collecting every error.

One unit per spec part, run in this order (later parts read what earlier ones resolved):
tasks' targets (targets.py) -> input features (features.py) -> masking (masking.py) -> inputs (tables.py,
pretrained.py, inputs.py) -> body (body.py) -> tasks (tasks.py) -> training (training.py), and the size of the
resolved plan (size.py). Each reports into the shared Context (context.py).
"""
from __future__ import annotations

import os
from pathlib import Path

from specc import spec as S
from specc.check.body import resolve_body
from specc.check.context import Context
from specc.check.features import resolve_features
from specc.check.inputs import resolve_inputs
from specc.check.masking import check_masking
from specc.check.size import check_size
from specc.check.targets import item_column, task_targets
from specc.check.tasks import resolve_tasks
from specc.check.training import check_training
from specc.errors import Issue, SpecError
from specc.plan import Plan
from specc.schema import Schema

KERNEL_CHOICES = ("auto", "triton", "torch")


def compile(spec, schema=None, kernels: str = "auto", *, trial_run: bool = True) -> Plan:  # noqa: A001
    """Check `spec` against `schema` and return its Plan; raise SpecError listing every problem.
    `trial_run=False` skips running Hugging Face bodies once and reading pretrained vectors (for plans already
    checked, e.g. of a run directory)."""
    if kernels not in KERNEL_CHOICES:
        raise SpecError([Issue("$", "invalid_argument", f"kernels={kernels!r}",
                               "choose one of " + ", ".join(KERNEL_CHOICES))])
    try:
        spec = S.load_spec(spec)
    except SpecError as exc:
        if exc.partial is None:
            raise
        # structural errors, and the semantic errors of the rest of the spec (not those under a bad key)
        try:
            check(Context(exc.partial, resolve_schema(exc.partial, schema), kernels))
        except SpecError as semantic:
            bad = [i.path.removesuffix(".kind") for i in exc.issues]
            more = [i for i in semantic.issues if not any(i.path == p or i.path.startswith((p + ".", p + "["))
                                                          for p in bad)]
            raise SpecError(exc.issues + more, exc.source) from None
        raise
    return check(Context(spec, resolve_schema(spec, schema), kernels, trial_run))


def resolve_schema(spec: S.ModelSpec, schema=None) -> Schema:
    """The schema given (a path, a Schema or a merlin Schema) wins over the one the spec names."""
    from specc.schema import load_schema
    if schema is not None:
        return load_schema(schema)
    path = spec_schema_path(spec)
    if path is None:
        raise SpecError([Issue("$.schema", "missing_schema", "no schema: the spec names none and none was given",
                               'add "schema": "path/to/schema.pbtxt" to the spec or pass --schema')])
    return load_schema(str(path))


def spec_schema_path(spec: S.ModelSpec) -> Path | None:
    """The schema file the spec names (relative to the spec's folder), or None."""
    if spec.schema_path is None:
        return None
    path = Path(spec.schema_path)
    return path if path.is_absolute() else (Path(spec.base_dir or os.getcwd()) / path).resolve()


def check(ctx: Context) -> Plan:
    """The whole plan, or SpecError with every issue the parts found."""
    targets = task_targets(ctx)
    features = resolve_features(ctx, targets)
    item = item_column(ctx, features)
    masking = check_masking(ctx)
    inputs = resolve_inputs(ctx, features, item)
    body = resolve_body(ctx, inputs, masking)
    tasks = resolve_tasks(ctx, item, inputs, body)
    check_training(ctx, tasks)
    if ctx.issues:
        raise SpecError(ctx.issues)
    from specc.count import count_parameters
    plan = Plan(name=ctx.spec.name, inputs=inputs, masking=masking, body=body, tasks=tuple(tasks), parameters=0,
                kernels=ctx.kernels, schema_source=ctx.schema.source, base_dir=ctx.spec.base_dir)
    plan = Plan(**{**plan.__dict__, "parameters": count_parameters(plan)})
    check_size(ctx, plan)
    if ctx.issues:
        raise SpecError(ctx.issues)
    return plan
