"""The spec language, version 1 (see SPEC.md): frozen pydantic models, closed objects, unions tagged by "kind".

This module does not import torch: parsing a spec is cheap and works anywhere.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from specc.errors import Issue, SpecError, did_you_mean, json_path
from specc.files import SPEC_LIMIT, UnreadableFile, parse_json, read_bytes

SPEC_VERSION = 1

PositiveInt = Annotated[int, Field(ge=1)]
# bounds far above any real model that keep every shape and parameter count a machine integer
Width = Annotated[int, Field(ge=1, le=1 << 20)]
Depth = Annotated[int, Field(ge=1, le=4096)]
MAX_SEQUENCE_LENGTH = 65536
MAX_BATCH_SIZE, MAX_EPOCHS = 1 << 24, 100_000   # far above any real run; keep step counts machine integers
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
Cutoffs = Annotated[list[PositiveInt], Field(min_length=1)]


class Closed(BaseModel):
    # strict: "32" is not an int, 1 is not a bool, 32.0 is not an int (ints are still accepted as floats)
    # and no NaN/Infinity (JSON readers accept them as literals)
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False)


# ---------------------------------------------------------------- inputs

class InferDims(Closed):
    multiplier: Annotated[float, Field(gt=0.0)] = 2.0


class Embeddings(Closed):
    default_dim: Width = 64
    dims: dict[str, Width] = {}
    infer: InferDims | None = None
    shared: dict[str, Annotated[list[str], Field(min_length=1)]] = {}


class LinearContinuous(Closed):
    kind: Literal["linear"]
    dim: Width = 16
    normalize: bool = True   # standardise each column (batch statistics; their running mean at inference)


class SoftEmbeddingContinuous(Closed):
    kind: Literal["soft_embedding"]
    cardinality: Width = 10
    dim: Width = 16
    normalize: bool = True


class IdentityContinuous(Closed):
    kind: Literal["identity"]


Continuous = Annotated[Union[LinearContinuous, SoftEmbeddingContinuous, IdentityContinuous], Field(discriminator="kind")]


class ConcatAggregation(Closed):
    kind: Literal["concat"]


class SumAggregation(Closed):
    kind: Literal["sum"]


class ItemMultiplyAggregation(Closed):
    kind: Literal["item_multiply"]


Aggregation = Annotated[Union[ConcatAggregation, SumAggregation, ItemMultiplyAggregation], Field(discriminator="kind")]

Activation = Literal["relu", "gelu", "none"]


class MlpProjection(Closed):
    kind: Literal["mlp"]
    dims: Annotated[list[Width], Field(min_length=1)]
    activation: Activation = "relu"
    dropout: Dropout = 0.0


Projection = Annotated[Union[MlpProjection], Field(discriminator="kind")]


class _PretrainedVectors(Closed):
    """Fixed vectors per id of a categorical feature (e.g. text or image embeddings of the items), one more part
    of each position; their file is read when compiling (checked against `dim` and the column's ids) and again
    when building, and they are saved with the model's weights."""
    path: Annotated[str, Field(min_length=1)]    # relative to the spec file
    dim: Width                                    # the vectors' width, as the file must hold them
    column: str | None = None                     # the categorical feature whose ids pick the rows (the item id)
    trainable: bool = False                       # false: frozen (a buffer); true: fine-tuned with the model
    projection: Width | None = None               # a Linear from dim to this width
    missing: Literal["error", "zero"] = "error"   # ids the file has no vector for: an error, or zero vectors


class NpyVectors(_PretrainedVectors):
    """A .npy array [rows, dim]: row i is the vector of id i (row 0, padding, is ignored)."""
    kind: Literal["npy"]


class SafetensorsVectors(_PretrainedVectors):
    """A .safetensors file: the tensor `vectors` [n, dim] (default: the file's only tensor besides `ids`) and,
    optionally, the tensor `ids` [n] naming each row's id (without it, row i is id i)."""
    kind: Literal["safetensors"]
    vectors: Annotated[str, Field(min_length=1)] | None = None
    ids: Annotated[str, Field(min_length=1)] | None = None


class ParquetVectors(_PretrainedVectors):
    """A parquet file or folder: an item table (the id in column `ids`, its vector in the list column `vectors`),
    or session data (an id list in `ids` and, aligned with it, a list of vectors in `vectors`)."""
    kind: Literal["parquet"]
    vectors: Annotated[str, Field(min_length=1)]
    ids: Annotated[str, Field(min_length=1)]


PretrainedVectors = Annotated[Union[NpyVectors, SafetensorsVectors, ParquetVectors], Field(discriminator="kind")]


class Inputs(Closed):
    max_sequence_length: Annotated[int, Field(ge=1, le=MAX_SEQUENCE_LENGTH)]
    features: Annotated[list[str], Field(min_length=1)] | None = None
    embeddings: Embeddings = Embeddings()
    continuous: Continuous = LinearContinuous(kind="linear")
    aggregation: Aggregation = ConcatAggregation(kind="concat")
    projection: Projection | None = None
    dropout: Dropout = 0.0
    layer_norm: bool = True
    pretrained: dict[str, PretrainedVectors] = {}


# ---------------------------------------------------------------- masking

class CausalMasking(Closed):
    kind: Literal["causal"]


class MlmMasking(Closed):
    kind: Literal["mlm"]
    probability: Probability = 0.15


class PlmMasking(Closed):
    kind: Literal["plm"]
    probability: Probability = 1 / 6
    max_span_length: PositiveInt = 5


class RtdMasking(Closed):
    kind: Literal["rtd"]
    probability: Probability = 0.15
    sample_from_batch: bool = False
    discriminator_weight: Annotated[float, Field(gt=0.0)] = 50.0


class NoMasking(Closed):
    kind: Literal["none"]


Masking = Annotated[Union[CausalMasking, MlmMasking, PlmMasking, RtdMasking, NoMasking], Field(discriminator="kind")]

# ---------------------------------------------------------------- body

ARCHITECTURES = ("native", "ligr", "gpt2", "xlnet", "bert", "roberta", "albert", "electra", "llama")


class TransformerBody(Closed):
    kind: Literal["transformer"]
    architecture: str
    d_model: Width
    n_head: Depth
    n_layer: Depth
    d_ff: Width | None = None
    dropout: Dropout = 0.1
    config: dict[str, Any] = {}

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        if value in ARCHITECTURES or (value.startswith("hf:") and len(value) > 3):
            return value
        raise PydanticCustomError("unknown_architecture", "unknown architecture {value}; choose one of {choices} "
                                  "or 'hf:<model_type>'",
                                  {"value": repr(value), "choices": ", ".join(ARCHITECTURES),
                                   "hint": did_you_mean(value, ARCHITECTURES)})


class GruBody(Closed):
    kind: Literal["gru"]
    d_model: Width
    n_layer: Depth = 1
    dropout: Dropout = 0.0


class MlpBody(Closed):
    kind: Literal["mlp"]
    dims: Annotated[list[Width], Field(min_length=1)]
    activation: Activation = "relu"
    dropout: Dropout = 0.0


class HstuBody(Closed):
    """HSTU (Zhai et al. 2024): pointwise SiLU attention with relative position bias, and time bias from the list
    column `time` (timestamps, in any unit) when given."""
    kind: Literal["hstu"]
    d_model: Width
    n_head: Depth
    n_layer: Depth
    dropout: Dropout = 0.1
    time: Annotated[str, Field(min_length=1)] | None = None


Body = Annotated[Union[TransformerBody, HstuBody, GruBody, MlpBody], Field(discriminator="kind")]

# ---------------------------------------------------------------- tasks

SAMPLERS = ("uniform", "log_uniform", "popularity", "in_batch", "mixed")


class CrossEntropyLoss(Closed):
    kind: Literal["cross_entropy"]
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class SampledSoftmaxLoss(Closed):
    kind: Literal["sampled_softmax"]
    negatives: PositiveInt = 8192
    sampler: Literal["uniform", "log_uniform", "popularity", "in_batch", "mixed"] = "uniform"
    logq_correction: bool = True


class GbceLoss(Closed):
    kind: Literal["gbce"]
    negatives: PositiveInt = 256
    t: Annotated[float, Field(ge=0.0, le=1.0)] = 0.75


class BceLoss(Closed):
    kind: Literal["bce"]
    negatives: PositiveInt = 1


NextItemLoss = Annotated[Union[CrossEntropyLoss, SampledSoftmaxLoss, GbceLoss, BceLoss], Field(discriminator="kind")]

RANKING_METRICS = ("ndcg", "recall", "mrr", "precision", "map")
CLASSIFICATION_METRICS = ("auc", "accuracy", "precision", "recall")
REGRESSION_METRICS = ("rmse", "mae")


def _metric_value_kind(value: Any) -> str:
    return "cutoffs" if isinstance(value, list) else "protocol" if isinstance(value, str) else "number"


# a next_item metric's cut-offs, or the value of a protocol key; chosen by the JSON type, so one error each
MetricValue = Annotated[Union[Annotated[Cutoffs, Tag("cutoffs")],
                              Annotated[str, Tag("protocol")],
                              Annotated[int, Field(ge=0), Tag("number")]], Discriminator(_metric_value_kind)]

# keys of a next_item task's `metrics` that choose the evaluation protocol, not a metric
RANKING_PROTOCOL_KEYS = {"protocol": "'full' or 'sampled'", "negatives": "a positive integer",
                         "seed": "an integer"}


def _check_metric_names(metrics: Mapping[str, Any] | list[str], allowed: tuple[str, ...], keyed: bool = False
                        ) -> None:
    """`at` (the metric's key, or its index in a list) makes the error's JSON path point at the metric itself;
    `keyed`: `metrics` lists the keys of a mapping."""
    keyed = keyed or isinstance(metrics, Mapping)
    for at, name in (((n, n) for n in metrics) if keyed else enumerate(metrics)):
        if name not in allowed:
            raise PydanticCustomError("unknown_metric", "unknown metric {name}; choose from {choices}",
                                      {"name": repr(name), "choices": ", ".join(allowed), "at": at,
                                       "hint": did_you_mean(name, allowed)})


class TaskBase(Closed):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    weight: Annotated[float, Field(gt=0.0)] = 1.0


class NextItemTask(TaskBase):
    kind: Literal["next_item"]
    target: str | None = None
    weight_tying: bool = True
    temperature: Annotated[float, Field(gt=0.0)] = 1.0
    loss: NextItemLoss = CrossEntropyLoss(kind="cross_entropy")
    # metric name -> cut-offs, and the evaluation protocol's keys (RANKING_PROTOCOL_KEYS)
    metrics: dict[str, MetricValue] = {"ndcg": [10, 20], "recall": [10, 20]}

    @field_validator("metrics")
    @classmethod
    def _ranking_metrics(cls, value):
        _check_metric_names([n for n in value if n not in RANKING_PROTOCOL_KEYS], RANKING_METRICS, keyed=True)
        for name, v in value.items():
            expected = RANKING_PROTOCOL_KEYS.get(name, "a list of cut-offs")
            ok = {"protocol": v in ("full", "sampled"), "negatives": isinstance(v, int) and v >= 1,
                  "seed": isinstance(v, int)}.get(name, isinstance(v, list))
            if not ok:
                raise PydanticCustomError("wrong_type", "{name} must be {expected}",
                                          {"name": name, "expected": expected, "at": name})
        return value

    @property
    def cutoffs(self) -> dict[str, list[int]]:
        return {k: v for k, v in self.metrics.items() if k not in RANKING_PROTOCOL_KEYS}

    @property
    def sampled_protocol(self) -> dict | None:
        """None to rank over the full catalog (the default); else the SASRec/BERT4Rec papers' protocol: the target
        ranked among `negatives` uniform items the sequence does not hold, drawn with `seed`."""
        m = self.metrics
        if m.get("protocol", "full") == "full":
            return None
        return {"negatives": m.get("negatives", 100), "seed": m.get("seed", 0)}


Summary = Literal["last", "first", "mean"]


class _SequenceSummaryTask(TaskBase):
    """A task predicting one column from a summary of the sequence."""
    ALLOWED_METRICS: ClassVar[tuple[str, ...]] = ()
    target: str
    summary: Summary = "last"

    @field_validator("metrics", check_fields=False)
    @classmethod
    def _known_metrics(cls, value):
        _check_metric_names(value, cls.ALLOWED_METRICS)
        return value


class BinaryClassificationTask(_SequenceSummaryTask):
    ALLOWED_METRICS: ClassVar[tuple[str, ...]] = CLASSIFICATION_METRICS
    kind: Literal["binary_classification"]
    metrics: list[str] = ["auc", "accuracy"]


class RegressionTask(_SequenceSummaryTask):
    ALLOWED_METRICS: ClassVar[tuple[str, ...]] = REGRESSION_METRICS
    kind: Literal["regression"]
    metrics: list[str] = ["rmse", "mae"]


Task = Annotated[Union[NextItemTask, BinaryClassificationTask, RegressionTask], Field(discriminator="kind")]

# ---------------------------------------------------------------- training


class Optimizer(Closed):
    kind: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: Annotated[float, Field(gt=0.0)] = 5e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0


class EarlyStopping(Closed):
    """Stop when the validation `metric` has not improved by more than `min_delta` for `patience` evaluations;
    the run keeps the weights of its best evaluation."""
    metric: Annotated[str, Field(min_length=1)] = "ndcg@10"
    patience: PositiveInt = 3
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0
    mode: Literal["max", "min"] | None = None   # default: min for rmse/mae, max for every other metric


class Training(Closed):
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)] = 64
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 3
    optimizer: Optimizer = Optimizer()
    seed: Annotated[int, Field(ge=0, lt=2 ** 63)] = 42
    precision: Literal["fp32", "bf16"] = "fp32"
    # the defaults were chosen on benchmarks/quality.py's matrix (benchmarks/RESULTS.md): a short run keeps its rate
    warmup: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    # after warm-up: constant, or a linear / cosine decay to lr × final_lr
    schedule: Literal["linear", "constant", "cosine"] = "constant"
    final_lr: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    clip_grad_norm: Annotated[float, Field(gt=0.0)] | None = 1.0
    # also checkpoint every N optimizer steps (besides the end of every epoch): a kill loses at most N steps
    checkpoint_every: Annotated[int, Field(ge=1, le=1 << 40)] | None = None
    early_stopping: EarlyStopping | None = None
    # experiment trackers besides the run directory's log.jsonl (extras specc[tensorboard], specc[mlflow])
    log_to: list[Literal["tensorboard", "mlflow"]] = []


# ---------------------------------------------------------------- the spec

class ModelSpec(Closed):
    json_schema_ref: str | None = Field(None, alias="$schema")
    specc: Literal[1]
    name: Annotated[str, Field(min_length=1)] = "model"
    schema_path: str | None = Field(None, alias="schema")
    inputs: Inputs
    masking: Masking = CausalMasking(kind="causal")
    body: Body
    tasks: Annotated[list[Task], Field(min_length=1)]
    training: Training = Training()
    base_dir: str | None = Field(None, exclude=True, description="folder the spec was read from (set by load_spec)")

    @model_validator(mode="after")
    def _unique_task_names(self):
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if n and names.count(n) > 1})
        if dupes:
            second = [i for i, n in enumerate(names) if n == dupes[0]][1]
            raise PydanticCustomError("duplicate_task_name", "task names must be unique; repeated: {names}",
                                      {"names": ", ".join(dupes), "at": ("tasks", second, "name")})
        return self

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"base_dir"})


# ---------------------------------------------------------------- loading


def load_spec(source: "ModelSpec | Mapping | str | os.PathLike") -> ModelSpec:
    """A ModelSpec from a path, a JSON string or a dict. Raises SpecError listing every problem."""
    if isinstance(source, ModelSpec):
        return source
    base_dir = None
    origin = None
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        text, origin = _read_text(source)
        if origin is not None:
            base_dir = str(Path(origin).resolve().parent)
        data = _parse_json(text, origin)
    return validate_spec(data, origin=origin, base_dir=base_dir)


def validate_spec(data: Any, origin: str | None = None, base_dir: str | None = None) -> ModelSpec:
    if not isinstance(data, Mapping):
        raise SpecError([Issue("$", "invalid_type",
                               f"a spec is a JSON object, got {_json_type(data)}",
                               'start the file with {"specc": 1, ...}')], origin)
    version = data.get("specc")
    if "specc" in data and (type(version) is not int or version != SPEC_VERSION):
        raise SpecError([Issue("$.specc", "unsupported_version",
                               f"unsupported spec language version {version!r}",
                               f"this specc reads version {SPEC_VERSION}")], origin)
    if "base_dir" in data:
        raise SpecError([Issue("$.base_dir", "unknown_key", "unknown key 'base_dir'")], origin)
    try:
        return ModelSpec.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        located = _issues_from_validation(exc, data)
        error = SpecError([issue for issue, _ in located], origin)
        error.partial = _without_bad_keys(data, [loc for _, loc in located], base_dir)
        raise error from None


# Required keys whose bad (or missing) value is replaced, in the partial spec, by the smallest value allowed: every
# check that grows stricter with the value accepts it, and one that rejects it reports under the bad key itself
# (compile drops that as a consequence), so the rest of the spec is still checked without spurious errors.
_PLACEHOLDERS: dict[tuple, Any] = {("inputs", "max_sequence_length"): 1}


def _without_bad_keys(data: Mapping, locs: list[list], base_dir: str | None) -> "ModelSpec | None":
    """The spec validated with every offending object key removed (its default takes over, or for a required key
    its placeholder), so that the semantic checks can still run and all errors are reported at once; None when
    that does not validate (another required key is bad, or an error sits inside a list)."""
    data = copy.deepcopy(dict(data))
    for loc in locs:
        if loc and loc[-1] == "kind":
            loc = loc[:-1]
        if not loc or not isinstance(loc[-1], str):
            return None
        node: Any = data
        for part in loc[:-1]:   # an earlier removal may have taken the parent away already
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                node = None
                break
        if isinstance(node, dict):
            node.pop(loc[-1], None)
            if tuple(loc) in _PLACEHOLDERS:
                node[loc[-1]] = _PLACEHOLDERS[tuple(loc)]
    try:
        return ModelSpec.model_validate({**data, "base_dir": base_dir})
    except ValidationError:
        return None


def _read_text(source) -> tuple[str, str | None]:
    if isinstance(source, (bytes, bytearray)):
        source = source.decode("utf-8", errors="replace")
    if not isinstance(source, (str, os.PathLike)):
        raise SpecError([Issue("$", "invalid_type", f"a spec is a path, a JSON string or a dict, got "
                               f"{type(source).__name__}")])
    text = str(source)
    looks_like_json = text.lstrip("\ufeff \t\r\n").startswith(("{", "["))
    if looks_like_json and not isinstance(source, os.PathLike):
        return text.lstrip("\ufeff"), None
    try:
        raw = read_bytes(text, limit=SPEC_LIMIT, what="spec file")
    except UnreadableFile as exc:
        code = "file_not_found" if not os.path.exists(text) or os.path.isdir(text) else "file_unreadable"
        raise SpecError([Issue("$", code, str(exc))]) from None
    try:
        return raw.decode("utf-8-sig"), text
    except UnicodeDecodeError as exc:
        raise SpecError([Issue("$", "invalid_encoding", f"the spec is not UTF-8 (byte {exc.start})",
                               "save the file as UTF-8")], text) from None


def _parse_json(text: str, origin: str | None) -> Any:
    try:
        return parse_json(text, "the spec")
    except UnreadableFile as exc:
        raise SpecError([Issue("$", "invalid_json", str(exc))], origin) from None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else type(value).__name__


# pydantic reports discriminated-union members by their tag inside `loc`; a JSON path must skip those.
_CUSTOM_CODES = {"unknown_architecture", "unknown_metric", "duplicate_task_name"}
_CODES = {
    "extra_forbidden": "unknown_key",
    "missing": "missing_key",
    "union_tag_invalid": "unknown_kind",
    "union_tag_not_found": "missing_kind",
    "literal_error": "invalid_choice",
}


def _issues_from_validation(exc: ValidationError, data: Any) -> list[tuple[Issue, list]]:
    """Each error as an Issue, with its location as a list of keys and indices into `data`."""
    issues = []
    seen = set()
    for err in exc.errors(include_url=False):
        ctx = err.get("ctx") or {}
        at = ctx.get("at", ())
        loc, model_path = _json_loc(err["loc"] + (("kind",) if err["type"].startswith("union_tag") else ())
                                    + (tuple(at) if isinstance(at, (tuple, list)) else (at,)), data)
        code = _code(err["type"], loc)
        message, hint = _describe(err, loc, model_path)
        key = (json_path(loc), code, message)
        if key not in seen:
            seen.add(key)
            issues.append((Issue(json_path(loc), code, message, hint), loc))
    return issues


def _code(kind: str, loc: list) -> str:
    if kind in _CUSTOM_CODES:
        return kind
    if kind == "literal_error" and loc and loc[-1] == "kind":
        return "unknown_kind"
    if kind in _CODES:
        return _CODES[kind]
    return "invalid_type" if kind.endswith("_type") or "parsing" in kind else "invalid_value"


_ABSENT = object()   # below a key the data does not have


def _json_loc(loc: tuple, data: Any) -> tuple[list, list]:
    """The JSON location of a pydantic error, and the model path (keys plus union tags) to find the model class."""
    out, node = [], data
    model_path = []
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            out.append(part)
            model_path.append(part)
            node = node[part]
        elif isinstance(node, Mapping) and part in node:
            out.append(part)
            model_path.append(part)
            node = node[part]
        elif isinstance(node, Mapping) and node.get("kind") == part:
            model_path.append(("kind", part))   # a union member's tag, not a key
        elif node is not _ABSENT and not isinstance(node, Mapping):
            continue   # under a list or scalar value, a name is a union member's, not a key
        elif isinstance(part, str) and not part.startswith(("function-", "list[", "dict[")):
            out.append(part)
            model_path.append(part)
            node = _ABSENT
    return out, model_path


# what a key holds: the hint of its bad or missing value
_KEY_HINTS = {("inputs", "max_sequence_length"):
              f"an integer from 1 to {MAX_SEQUENCE_LENGTH}: how many of the most recent items each row keeps"}


def _describe(err: dict, loc: list, model_path: list) -> tuple[str, str | None]:
    kind = err["type"]
    field = loc[-1] if loc else None
    key_hint = _KEY_HINTS.get(tuple(loc))
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model_path[:-1])
        hint = did_you_mean(field, allowed) if allowed else None
        if allowed and not hint:
            hint = "allowed keys: " + ", ".join(allowed)
        return f"unknown key {field!r}", hint
    if kind == "missing":
        return f"missing required key {field!r}", key_hint
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = err.get("ctx", {}).get("expected_tags", "")
        choices = [c.strip().strip("'") for c in expected.split(",") if c.strip()]
        given = err.get("ctx", {}).get("tag")
        if kind == "union_tag_not_found":
            return "missing \"kind\"", "choose one of " + ", ".join(repr(c) for c in choices)
        hint = did_you_mean(given, choices)
        return (f"unknown kind {given!r}",
                (hint + " " if hint else "") + "choose one of " + ", ".join(repr(c) for c in choices))
    if kind in _CUSTOM_CODES:
        return err["msg"], (err.get("ctx") or {}).get("hint")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
        hint = did_you_mean(err["input"], choices) if isinstance(err["input"], str) else None
        choose = "choose one of " + ", ".join(repr(c) for c in choices)
        return f"{err['input']!r} is not allowed here", (hint + " " if hint else "") + choose
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return message, key_hint


def _allowed_keys(model_path: list) -> list[str]:
    """The keys a closed object at `model_path` accepts (walking ModelSpec's fields and union tags)."""
    import types
    import typing

    def unwrap(tp):
        while True:
            origin = typing.get_origin(tp)
            if origin is Annotated:
                tp = typing.get_args(tp)[0]
            elif origin in (Union, types.UnionType):
                args = [a for a in typing.get_args(tp) if a is not type(None)]
                if len(args) != 1:
                    return args
                tp = args[0]
            else:
                return tp

    current: Any = ModelSpec
    for part in model_path:
        current = unwrap(current)
        if isinstance(part, tuple):   # a union tag picks the member
            members = current if isinstance(current, list) else [current]
            current = next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)
                            and part[1] in typing.get_args(m.model_fields["kind"].annotation)), None)
        elif isinstance(part, int):
            current = typing.get_args(current)[0] if typing.get_origin(current) is list else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            fields = {f.alias or n: f for n, f in current.model_fields.items()}
            current = fields[part].annotation if part in fields else None
        else:
            return []
        if current is None:
            return []
    current = unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items() if n != "base_dir"]
    return []


def json_schema() -> dict:
    """The JSON Schema of the spec language, for editors (published as specc/spec.schema.json)."""
    schema = ModelSpec.model_json_schema(by_alias=True)
    schema["properties"].pop("base_dir", None)
    schema["title"] = "specc model spec, version 1"
    schema["$id"] = "https://specc.dev/spec.schema.json"
    return schema
