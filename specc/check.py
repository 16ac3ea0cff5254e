"""Semantic check: bind a ModelSpec to a Schema and resolve it into a Plan, collecting every error."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from specc import spec as S
from specc.errors import Issue, SpecError, did_you_mean
from specc.plan import (RTD_LOSS_NAME, BodyPlan, ContinuousPlan, FeaturePlan, InputsPlan, LossPlan, MaskingPlan,
                        Plan, ProjectionPlan, TablePlan, TaskPlan)
from specc.schema import Column, Schema

KERNEL_CHOICES = ("auto", "triton", "torch")


def compile(spec, schema=None, kernels: str = "auto", *, trial_run: bool = True) -> Plan:  # noqa: A001
    """Check `spec` against `schema` and return its Plan; raise SpecError listing every problem.
    `trial_run=False` skips running Hugging Face bodies once (for plans already checked, e.g. of a run directory)."""
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
            Checker(exc.partial, resolve_schema(exc.partial, schema), kernels).run()
        except SpecError as semantic:
            bad = [i.path.removesuffix(".kind") for i in exc.issues]
            more = [i for i in semantic.issues if not any(i.path == p or i.path.startswith((p + ".", p + "["))
                                                          for p in bad)]
            raise SpecError(exc.issues + more, exc.source) from None
        raise
    return Checker(spec, resolve_schema(spec, schema), kernels, trial_run).run()


def resolve_schema(spec: S.ModelSpec, schema=None) -> Schema:
    """The schema given (a path, a Schema or a merlin Schema) wins over the one the spec names."""
    from specc.schema import load_schema
    if schema is not None:
        return load_schema(schema)
    if spec.schema_path is None:
        raise SpecError([Issue("$.schema", "missing_schema", "no schema: the spec names none and none was given",
                               'add "schema": "path/to/schema.pbtxt" to the spec or pass --schema')])
    path = Path(spec.schema_path)
    if not path.is_absolute():
        path = (Path(spec.base_dir or os.getcwd()) / path).resolve()
    return load_schema(str(path))


class Checker:
    def __init__(self, spec: S.ModelSpec, schema: Schema, kernels: str, trial_run: bool = True):
        self.spec, self.schema, self.kernels, self.trial_run = spec, schema, kernels, trial_run
        self.issues: list[Issue] = []

    def error(self, path: str, code: str, message: str, hint: str | None = None, column: str | None = None):
        self.issues.append(Issue(path, code, message, hint, column))

    def column(self, name: str, path: str) -> Column | None:
        if name in self.schema:
            return self.schema[name]
        source = f" ({self.schema.source})" if self.schema.source else ""
        self.error(path, "unknown_column", f"column {name!r} is not in the schema{source}",
                   did_you_mean(name, self.schema.names), name)
        return None

    # ------------------------------------------------------------------ the whole plan

    def run(self) -> Plan:
        spec = self.spec
        task_targets = self.check_task_targets()
        features = self.resolve_features(task_targets)
        item = self.resolve_item_column(features)
        masking = self.check_masking()
        inputs = self.resolve_inputs(features, item)
        body = self.resolve_body(inputs, masking)
        tasks = self.resolve_tasks(item, inputs, body, features)
        if self.issues:
            raise SpecError(self.issues)
        from specc.count import count_parameters
        plan = Plan(name=spec.name, inputs=inputs, masking=masking, body=body, tasks=tuple(tasks), parameters=0,
                    kernels=self.kernels, schema_source=self.schema.source)
        return Plan(**{**plan.__dict__, "parameters": count_parameters(plan)})

    # ------------------------------------------------------------------ features

    def check_task_targets(self) -> dict[str, str]:
        """Columns that classification/regression tasks predict (they must never be inputs)."""
        targets = {}
        for i, task in enumerate(self.spec.tasks):
            if task.kind == "next_item":
                continue
            path = f"$.tasks[{i}].target"
            col = self.column(task.target, path)
            if col is None:
                continue
            targets[col.name] = path
            if task.kind == "binary_classification":
                binary = ("binary_classification" in col.tags or col.dtype == "bool"
                          or (col.dtype == "int" and col.int_range is not None and col.int_range[0] >= 0
                              and col.int_range[1] <= 1))
                if not binary:
                    self.error(path, "wrong_target_type",
                               f"column {col.name!r} is not a 0/1 column (tags: {', '.join(sorted(col.tags)) or 'none'})",
                               "tag it binary_classification or give it int_domain {min: 0 max: 1}", col.name)
            elif col.dtype not in ("float", "int") or col.is_categorical:
                self.error(path, "wrong_target_type",
                           f"regression target {col.name!r} must be a numeric, non-categorical column",
                           "tag it regression or continuous", col.name)
        return targets

    def resolve_features(self, task_targets: dict[str, str]) -> list[Column]:
        names = self.spec.inputs.features
        if names is None:
            chosen = [c for c in self.schema if (c.is_categorical or c.is_continuous)
                      and c.name not in task_targets and not c.is_target]
            if not chosen:
                self.error("$.inputs.features", "no_features",
                           "the schema has no column tagged categorical or continuous to use as a feature",
                           "list the features in inputs.features")
            for col in chosen:
                if col.is_categorical and not col.cardinality:
                    self.error("$.inputs.features", "no_cardinality",
                               f"categorical column {col.name!r} (a default feature) has no cardinality",
                               "give it int_domain {min: 0 max: N} in the schema, or list inputs.features "
                               "without it", col.name)
            return [c for c in chosen if not (c.is_categorical and not c.cardinality)]
        chosen, seen = [], set()
        for j, name in enumerate(names):
            path = f"$.inputs.features[{j}]"
            if name in seen:
                self.error(path, "duplicate_feature", f"feature {name!r} is listed twice", column=name)
                continue
            seen.add(name)
            col = self.column(name, path)
            if col is None:
                continue
            if name in task_targets:
                self.error(path, "target_leak", f"column {name!r} is the target of {task_targets[name][:-7]}; "
                           "as an input it would leak the answer", "remove it from inputs.features", name)
                continue
            if not (col.is_categorical or col.is_continuous):
                self.error(path, "not_a_feature",
                           f"column {name!r} is neither categorical nor continuous "
                           f"(tags: {', '.join(sorted(col.tags)) or 'none'})",
                           "tag it categorical or continuous in the schema", name)
                continue
            if col.is_categorical and not col.cardinality:
                self.error(path, "no_cardinality", f"categorical column {name!r} has no cardinality",
                           "give it int_domain {min: 0 max: N} in the schema", name)
                continue
            chosen.append(col)
        return chosen

    def resolve_item_column(self, features: list[Column]) -> Column | None:
        """The item-id column: the next_item target, else the item id among the features."""
        feature_names = {c.name for c in features}
        for i, task in enumerate(self.spec.tasks):
            if task.kind != "next_item":
                continue
            path = f"$.tasks[{i}].target"
            if task.target is not None:
                col = self.column(task.target, path)
            else:
                candidates = self.schema.item_id_columns()
                for narrower in ([c for c in candidates if c.is_list],            # a sequence to predict along
                                 [c for c in candidates if c.name in feature_names]):
                    if len(candidates) > 1 and len(narrower) == 1:
                        candidates = narrower
                if not candidates:
                    self.error(path, "missing_item_id", "the schema has no item-id column",
                               'tag one column item_id (or item and id), or set "target"')
                    return None
                if len(candidates) > 1:
                    self.error(path, "ambiguous_item_id",
                               "several item-id columns: " + ", ".join(c.name for c in candidates),
                               'set "target" to one of them')
                    return None
                col = candidates[0]
            if col is None:
                return None
            ok = True
            if not col.is_categorical or col.dtype != "int":
                self.error(path, "not_categorical", f"item column {col.name!r} is not a categorical int column",
                           "tag it categorical", col.name)
                ok = False
            elif not col.cardinality:
                self.error(path, "no_cardinality", f"item column {col.name!r} has no cardinality",
                           "give it int_domain {min: 0 max: N} in the schema", col.name)
                ok = False
            elif not col.is_list:
                self.error(path, "not_sequential", f"item column {col.name!r} is not a list column",
                           "next-item prediction needs the item sequence (tag it list)", col.name)
                ok = False
            elif col.name not in feature_names and self.spec.inputs.features is not None:
                self.error("$.inputs.features", "missing_item_feature",
                           f"the next-item target {col.name!r} must also be an input feature",
                           f"add {col.name!r} to inputs.features", col.name)
                ok = False
            return col if ok else None
        return next((c for c in features if c.is_item_id and c.is_list), None)

    # ------------------------------------------------------------------ inputs

    def resolve_inputs(self, features: list[Column], item: Column | None) -> InputsPlan | None:
        spec = self.spec.inputs
        emb = spec.embeddings
        names = {c.name for c in features}
        categorical = [c for c in features if c.is_categorical]
        continuous = [c for c in features if not c.is_categorical]
        sequence = item if item is not None and item.name in names else next(
            (c for c in categorical if c.is_list), None)
        if sequence is None and features:
            self.error("$.inputs.features", "no_sequence",
                       "no categorical list feature: there is no sequence to model",
                       "add the item-id list column to inputs.features")

        categorical_names = {c.name for c in categorical}
        for col_name in emb.dims:
            if col_name not in categorical_names and col_name not in emb.shared:
                if col_name in self.schema:
                    self.error(f"$.inputs.embeddings.dims.{col_name}", "not_a_feature",
                               f"{col_name!r} has a dim but is not a categorical feature", column=col_name)
                else:
                    self.column(col_name, f"$.inputs.embeddings.dims.{col_name}")

        table_of: dict[str, str] = {c.name: c.name for c in categorical}
        for table, cols in emb.shared.items():
            path = f"$.inputs.embeddings.shared.{table}"
            for j, name in enumerate(cols):
                col = self.schema[name] if name in self.schema else self.column(name, f"{path}[{j}]")
                if col is None:
                    continue
                if name not in names or not col.is_categorical:
                    self.error(f"{path}[{j}]", "not_categorical",
                               f"{name!r} is not a categorical feature of this model", column=name)
                elif table_of[name] != name:
                    self.error(f"{path}[{j}]", "shared_twice",
                               f"{name!r} is already in shared table {table_of[name]!r}", column=name)
                else:
                    table_of[name] = table
            if table in names and table not in cols:
                self.error(path, "table_name_clash", f"shared table {table!r} has the name of another feature's table",
                           "pick another table name")

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
                self.error(f"$.inputs.embeddings.shared.{t}", "shape_mismatch",
                           f"columns sharing table {t!r} have different dims ({', '.join(map(str, sorted(dims)))})",
                           f"set one dim for the shared table: embeddings.dims.{t}", cols[0].name)
            if dims:
                dim = max(dims)
            elif emb.infer is not None:
                dim = max(1, math.ceil(rows ** 0.25 * emb.infer.multiplier))
            else:
                dim = emb.default_dim
            tables[t] = TablePlan(t, tuple(c.name for c in cols), rows, dim)

        cont_spec = spec.continuous
        cont_plan = None
        cont_widths: list[int] = []
        if continuous:
            names_c = tuple(c.name for c in continuous)
            if cont_spec.kind == "linear":
                cont_plan = ContinuousPlan("linear", names_c, cont_spec.dim)
                cont_widths = [cont_spec.dim]
            elif cont_spec.kind == "soft_embedding":
                cont_plan = ContinuousPlan("soft_embedding", names_c, cont_spec.dim, cont_spec.cardinality)
                cont_widths = [cont_spec.dim] * len(continuous)
            else:
                cont_plan = ContinuousPlan("identity", names_c, 1)
                cont_widths = [1] * len(continuous)

        feature_plans = []
        for col in features:
            if col.is_categorical:
                t = table_of[col.name]
                width = tables[t].dim if t in tables else 0
                feature_plans.append(FeaturePlan(col.name, "categorical", col.is_list, t, width, col.cardinality))
            else:
                feature_plans.append(FeaturePlan(col.name, "continuous", col.is_list, None,
                                                 cont_plan.dim if cont_plan else 0))
        # parts: sequential categorical, then scalar (context) categorical, each in feature order, then continuous
        part_widths = tuple(f.width for f in feature_plans if f.role == "categorical" and f.sequential) + \
            tuple(f.width for f in feature_plans if f.role == "categorical" and not f.sequential) + tuple(cont_widths)

        agg = spec.aggregation.kind
        width = sum(part_widths)
        if agg == "sum" and len(set(part_widths)) > 1:
            self.error("$.inputs.aggregation", "shape_mismatch",
                       "sum aggregation needs parts of one width; got "
                       + ", ".join(f"{f.column}={f.width}" for f in feature_plans if f.role == "categorical")
                       + (f", continuous={cont_widths[0]}" if cont_widths else ""),
                       "set embeddings.default_dim (and continuous.dim) so all parts match, or use concat")
        if agg in ("sum", "item_multiply") and part_widths:
            width = part_widths[0]
        if agg == "item_multiply":
            if item is None or item.name not in names:
                self.error("$.inputs.aggregation", "missing_item_feature",
                           "item_multiply needs the item-id column among the features")
            else:
                item_width = tables[table_of[item.name]].dim
                others = [(f.column, f.width) for f in feature_plans if f.column != item.name and f.role == "categorical"]
                others += [("continuous", w) for w in cont_widths]
                if not others:
                    self.error("$.inputs.aggregation", "shape_mismatch",
                               "item_multiply needs at least one feature besides the item id", "use concat")
                bad = [f"{n}={w}" for n, w in others if w != item_width]
                if bad:
                    self.error("$.inputs.aggregation", "shape_mismatch",
                               f"item_multiply needs every other part as wide as the item embedding ({item_width}); "
                               "got " + ", ".join(bad), "set their dims to the item dim")
                width = item_width
        if sequence is None or not features:
            return None

        body = self.spec.body
        target_width = getattr(body, "d_model", None)
        projection = None
        if spec.projection is not None:
            p = spec.projection
            projection = ProjectionPlan("mlp", width, tuple(p.dims), p.activation, p.dropout)
            if target_width is not None and p.dims[-1] != target_width:
                self.error("$.inputs.projection.dims", "shape_mismatch",
                           f"the projection ends at width {p.dims[-1]} but the body's d_model is {target_width}",
                           f"make the last projection dim {target_width}")
        elif target_width is not None and width != target_width:
            projection = ProjectionPlan("linear", width, (target_width,))
        output_width = projection.dims[-1] if projection else width
        return InputsPlan(spec.max_sequence_length, sequence.name, tuple(feature_plans), tuple(tables.values()),
                          cont_plan, agg, part_widths, width, spec.layer_norm, spec.dropout, projection, output_width)

    # ------------------------------------------------------------------ masking and body

    def check_masking(self) -> MaskingPlan:
        m = self.spec.masking
        has_next_item = any(t.kind == "next_item" for t in self.spec.tasks)
        if m.kind == "none" and has_next_item:
            self.error("$.masking", "masking_mismatch", "masking 'none' cannot train a next_item task",
                       "use causal (or mlm/plm/rtd) masking")
        if m.kind == "causal" and has_next_item and self.spec.inputs.max_sequence_length < 2:
            self.error("$.inputs.max_sequence_length", "masking_mismatch",
                       "causal next-item training needs sequences of at least 2 items (one to predict from)",
                       "raise max_sequence_length")
        if m.kind in ("mlm", "plm", "rtd") and not has_next_item:
            self.error("$.masking", "masking_mismatch", f"masking {m.kind!r} trains a next_item task; there is none",
                       "add a next_item task or use masking causal/none")
        return MaskingPlan(kind=m.kind, probability=getattr(m, "probability", 0.0),
                           max_span_length=getattr(m, "max_span_length", 0),
                           sample_from_batch=getattr(m, "sample_from_batch", False),
                           discriminator_weight=getattr(m, "discriminator_weight", 0.0))

    def resolve_body(self, inputs: InputsPlan | None, masking: MaskingPlan) -> BodyPlan | None:
        from specc.nn.bodies import capabilities
        body = self.spec.body
        need = {"causal": "causal", "mlm": "bidirectional", "rtd": "bidirectional", "plm": "plm",
                "none": "bidirectional"}[masking.kind]
        name = body.architecture if body.kind == "transformer" else body.kind
        try:
            caps = capabilities(body.kind, getattr(body, "architecture", None))
        except ValueError as exc:
            self.error("$.body.architecture", "unknown_architecture", str(exc), getattr(exc, "hint", None))
            return None
        if not caps:
            self.error("$.body.architecture", "unsupported_architecture",
                       f"{name} is neither a decoder nor an encoder language model in transformers "
                       "(encoder-decoder models cannot run on a single sequence of embeddings)",
                       "use a decoder (e.g. hf:mistral) or an encoder (e.g. hf:distilbert)")
            return None
        if masking.kind == "none" and "bidirectional" not in caps:
            need = "causal"
        if need not in caps:
            self.error("$.masking", "masking_mismatch", f"masking {masking.kind!r} needs a {need} body; "
                       f"{name} supports {', '.join(sorted(caps))}",
                       {"causal": "use native, ligr, gpt2, xlnet, bert, roberta, albert, electra, llama, hstu, gru "
                                  "or mlp",
                        "bidirectional": "use native, ligr, xlnet, bert, roberta, albert, electra or hstu",
                        "plm": "plm runs on native, ligr, xlnet or hstu"}[need])
            return None
        causal = need == "causal"
        max_len = self.spec.inputs.max_sequence_length
        if body.kind == "mlp":
            width = inputs.output_width if inputs else 0
            return BodyPlan("mlp", None, width, body.dims[-1], True, dims=tuple(body.dims),
                            activation=body.activation, dropout=body.dropout)
        if body.kind == "gru":
            return BodyPlan("gru", None, body.d_model, body.d_model, True, n_layer=body.n_layer, dropout=body.dropout)
        if body.d_model % body.n_head:
            self.error("$.body.n_head", "shape_mismatch",
                       f"d_model {body.d_model} is not divisible by n_head {body.n_head}",
                       "pick n_head dividing d_model, e.g. " + ", ".join(
                           str(h) for h in range(1, min(body.d_model, 32) + 1) if body.d_model % h == 0))
            return None
        if body.kind == "hstu":
            from specc.body_checks import resolve_hstu
            return resolve_hstu(self, body, causal)
        d_ff = body.d_ff or 4 * body.d_model
        config: dict[str, Any] = {}
        if body.architecture not in ("native", "ligr"):
            from specc.nn.hf import check_runs, resolve_config
            from specc.nn.xlnet import runs_natively
            try:
                config = resolve_config(body.architecture, d_model=body.d_model, n_head=body.n_head,
                                        n_layer=body.n_layer, d_ff=d_ff, dropout=body.dropout,
                                        max_positions=max_len, causal=causal, overrides=body.config)
            except Exception as exc:   # noqa: BLE001 - transformers' config classes raise anything
                self.error("$.body.config", "invalid_body_config", str(exc).strip().splitlines()[0][:300],
                           getattr(exc, "hint", None))
                return None
            try:
                if self.trial_run and not runs_natively(body.architecture, config):
                    check_runs(config, causal, body.d_model, max_len, body.n_layer, d_ff)
            except ValueError as exc:
                self.error("$.body.architecture", "unsupported_architecture", str(exc),
                           "use one of the listed architectures, or change body.config")
                return None
            except Exception as exc:   # noqa: BLE001 - a config value the model class cannot build with
                self.error("$.body.config", "invalid_body_config",
                           f"{type(exc).__name__}: {str(exc).strip()[:300]} (building {body.architecture})",
                           "check the body.config values against the Hugging Face config class")
                return None
        elif body.config:
            self.error("$.body.config", "unknown_key", f"the {body.architecture} body takes no config overrides",
                       "use d_ff, dropout, n_head and n_layer")
        return BodyPlan("transformer", body.architecture, body.d_model, body.d_model, causal, n_head=body.n_head,
                        n_layer=body.n_layer, d_ff=d_ff, dropout=body.dropout, max_positions=max_len, config=config)

    # ------------------------------------------------------------------ tasks

    def resolve_tasks(self, item: Column | None, inputs: InputsPlan | None, body: BodyPlan | None,
                      features: list[Column]) -> list[TaskPlan]:
        plans, used_names = [], set()
        next_items = [i for i, t in enumerate(self.spec.tasks) if t.kind == "next_item"]
        for extra in next_items[1:]:
            self.error(f"$.tasks[{extra}]", "duplicate_task", "only one next_item task is supported per model")
        for i, task in enumerate(self.spec.tasks):
            name = task.name or task.kind
            if name == RTD_LOSS_NAME and self.spec.masking.kind == "rtd":
                self.error(f"$.tasks[{i}].name", "reserved_task_name",
                           f"{name!r} names the discriminator loss of rtd masking", "pick another task name")
            if name in used_names:
                k = 1
                while f"{name}_{k}" in used_names:
                    k += 1
                name = f"{name}_{k}"
            used_names.add(name)
            if task.kind == "next_item":
                if item is None or i != next_items[0]:
                    continue
                self.check_negatives(i, task, item)
                if inputs is not None and body is not None:
                    plans.append(self.resolve_next_item(task, name, item, inputs, body))
            else:
                if task.target not in self.schema:
                    continue
                col = self.schema[task.target]
                metrics = tuple(dict.fromkeys(task.metrics))
                plans.append(TaskPlan(name, task.kind, task.weight, col.name, metrics, summary=task.summary,
                                      target_sequential=col.is_list))
        return plans

    def check_negatives(self, i: int, task: S.NextItemTask, item: Column) -> None:
        loss = task.loss
        negatives = getattr(loss, "negatives", 0)
        uses_negatives = not (loss.kind == "sampled_softmax" and loss.sampler == "in_batch")
        if uses_negatives and negatives >= item.cardinality - 1:
            self.error(f"$.tasks[{i}].loss.negatives", "too_many_negatives",
                       f"{negatives} negatives but the catalog has only {item.cardinality - 1} items",
                       "use cross_entropy over the full catalog, or fewer negatives", item.name)

    def resolve_next_item(self, task: S.NextItemTask, name: str, item: Column, inputs: InputsPlan,
                          body: BodyPlan) -> TaskPlan:
        n_items = item.cardinality
        loss = task.loss
        negatives = getattr(loss, "negatives", 0)
        table = next(t for t in inputs.tables if item.name in t.columns)
        projection = None
        if task.weight_tying and body.output_width != table.dim:
            projection = (body.output_width, table.dim)
        metrics = {k: tuple(sorted(set(v))) for k, v in task.metrics.items()}
        loss_plan = LossPlan(loss.kind, label_smoothing=getattr(loss, "label_smoothing", 0.0), negatives=negatives,
                             sampler=getattr(loss, "sampler", None), logq_correction=getattr(loss, "logq_correction", False),
                             t=getattr(loss, "t", 0.0))
        return TaskPlan(name, "next_item", task.weight, item.name, metrics, n_items=n_items,
                        table=table.name if task.weight_tying else None, output_projection=projection,
                        temperature=task.temperature, loss=loss_plan)
