"""The schema view: the columns of a Merlin schema as plain Python data.

merlin-core is imported lazily, only to read and write schema files, so that `import specc` and
`specc.build` work where merlin is not installed.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from specc.errors import Issue, SpecError
from specc.files import SCHEMA_LIMIT, UnreadableFile, parse_json, read_text


@dataclass(frozen=True)
class Column:
    name: str
    tags: frozenset[str] = frozenset()   # lower-case Merlin tags: "categorical", "list", "item", "id", "item_id", ...
    dtype: str = "int"                   # "int", "float", "bool" or "string"
    is_list: bool = False
    cardinality: int | None = None       # int_domain.max + 1 of a categorical column; id 0 is padding
    value_count: tuple[int, int | None] | None = None  # (min, max) items per row of a list column, where known
    int_range: tuple[int, int] | None = None   # int_domain (min, max) of a non-categorical int column

    @property
    def is_categorical(self) -> bool:
        return "categorical" in self.tags

    @property
    def is_continuous(self) -> bool:
        return "continuous" in self.tags

    @property
    def is_item_id(self) -> bool:
        return "item_id" in self.tags or {"item", "id"} <= self.tags

    @property
    def is_target(self) -> bool:
        return bool({"target", "binary_classification", "regression", "multi_class_classification"} & self.tags)


@dataclass(frozen=True)
class Schema:
    columns: tuple[Column, ...]
    source: str | None = None            # where it was read from, for error messages
    _by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    @classmethod
    def from_columns(cls, columns: Iterable[Column | Mapping], source: str | None = None) -> "Schema":
        """Build a schema view in Python, e.g. `{"name": "item_id-list", "tags": ["item_id", "categorical"],
        "is_list": True, "cardinality": 1000}`."""
        built = []
        for c in columns:
            if isinstance(c, Mapping):
                vc = c.get("value_count")
                rng = c.get("int_range")
                c = Column(**{**c, "tags": frozenset(t.lower() for t in c.get("tags", ())),
                              "value_count": tuple(vc) if vc else None, "int_range": tuple(rng) if rng else None})
            built.append(c)
        return cls(tuple(built), source)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Column:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.columns)

    def item_id_columns(self) -> list[Column]:
        return [c for c in self.columns if c.is_item_id]

    def to_columns(self) -> list[dict]:
        """The columns as plain JSON data; `Schema.from_columns` reads it back (no merlin needed)."""
        return [{"name": c.name, "tags": sorted(c.tags), "dtype": c.dtype, "is_list": c.is_list,
                 "cardinality": c.cardinality, "value_count": list(c.value_count) if c.value_count else None,
                 "int_range": list(c.int_range) if c.int_range else None}
                for c in self.columns]


# ---------------------------------------------------------------------------------------------
# Reading and writing schema files (merlin-core, imported lazily)
# ---------------------------------------------------------------------------------------------

_PBTXT = "schema.pbtxt"
_JSON = "schema.json"
_COMPOUND = {"item_id": {"item", "id"}, "user_id": {"user", "id"}, "session_id": {"session", "id"}}


def _schema_error(code: str, message: str, hint: str | None, source: str | None) -> SpecError:
    return SpecError([Issue(path="$.schema", code=code, message=message, hint=hint)], source=source)


def _quiet_merlin():
    """Import merlin.schema with its 'tensorflow/triton dtype mappings did not load' warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import merlin.dtypes  # noqa: F401
        import merlin.schema
        from merlin.schema.io.tensorflow_metadata import TensorflowMetadata
    return merlin.schema, TensorflowMetadata


def _tag_str(tag: Any) -> str:
    return str(getattr(tag, "value", tag)).lower()


def _dtype_str(col, tags: set[str]) -> str:
    hinted = (col.properties or {}).get("specc_dtype")   # written by save_schema where merlin has no type
    if hinted in ("int", "float", "bool", "string"):
        return hinted
    dtype = col.dtype
    kind = getattr(getattr(dtype, "element_type", None), "value", "unknown")
    if kind in ("int", "uint"):
        return "int"
    if kind == "float":
        return "float"
    if kind == "bool":
        return "bool"
    if kind == "string":
        return "string"
    # No type in the file (T4Rec's targets, e.g. `click`): guess from the tags.
    if tags & {"categorical", "binary_classification", "multi_class_classification", "binary", "multi_class", "id"}:
        return "int"
    return "float"


_DOMAIN_HINT = {
    True: "a categorical column holds ids 1..max, with 0 reserved for padding: write "
          "`int_domain { min: 0 max: N is_categorical: true }` with N >= 1 the largest id (a missing max reads as 0)",
    False: "an int_domain is the range min..max of the column's values and needs min <= max "
           "(a missing max reads as 0)",
}


def _issue(code: str, column: str, message: str, hint: str) -> Issue:
    return Issue(path="$.schema", code=code, message=message, hint=hint, column=column)


def _feature_issues(features) -> list[Issue]:
    """Problems in the file that merlin-core hides: a repeated column name (the later block silently wins)
    and a JSON `"tag"` given as a string (read as a set of single letters)."""
    issues = [_issue("duplicate_column", name, f"column {name!r} is defined {n} times",
                     "give each `feature { ... }` block its own name; merlin-core keeps only the last one")
              for name, n in Counter(f.name for f in features).items() if n > 1]
    issues += [_issue("invalid_tags", f.name, f"column {f.name!r} has its tags as a string {f.annotation.tag!r}",
                      f"write a list: \"tag\": [{json.dumps(f.annotation.tag)}]")
               for f in features if isinstance(f.annotation.tag, str)]
    return issues


def _domain_issue(name: str, domain: Mapping, categorical: bool) -> Issue | None:
    lo, hi = int(domain.get("min") or 0), int(domain["max"])
    if categorical and hi < 1:
        problem = f"max {hi} leaves no id besides the padding id 0"
    elif lo > hi:
        problem = f"min {lo} is greater than max {hi}"
    elif categorical and lo < 0:
        problem = f"min {lo} is negative, and ids index an embedding table"
    else:
        return None
    return _issue("invalid_domain", name, f"column {name!r} has an invalid int_domain: {problem}",
                  _DOMAIN_HINT[categorical])


def _from_merlin(mschema, source: str | None, issues: Iterable[Issue] = ()) -> Schema:
    """The specc view of a merlin schema. Raises `SpecError` with `issues` (found earlier in the file) and
    every bad int_domain."""
    issues = list(issues)
    columns = []
    for col in mschema:
        tags = {_tag_str(t) for t in col.tags}
        props = dict(col.properties or {})
        value_count = props.get("value_count") or None
        is_list = bool(col.is_list or col.is_ragged or "list" in tags or value_count)
        if is_list:
            tags.add("list")
        for compound, parts in _COMPOUND.items():    # merlin atomises these already; a hand-built one may not
            if compound in tags:
                tags = (tags - {compound}) | parts
        domain = props.get("domain") or {}
        if domain.get("is_categorical"):
            tags.add("categorical")
        dtype = _dtype_str(col, tags)
        cardinality = int_range = None
        categorical = "categorical" in tags and dtype in ("int", "bool")
        if domain.get("max") is not None and (categorical or dtype == "int"):
            if bad := _domain_issue(str(col.name), domain, categorical):
                issues.append(bad)
            elif categorical:
                cardinality = int(domain["max"]) + 1
            else:
                int_range = (int(domain.get("min") or 0), int(domain["max"]))
        vc = None
        if value_count:
            lo = value_count.get("min")
            hi = value_count.get("max")
            vc = (int(lo or 0), int(hi) if hi else None)
            if vc == (0, None):
                vc = None
        columns.append(Column(name=str(col.name), tags=frozenset(tags), dtype=dtype, is_list=is_list,
                              cardinality=cardinality, int_range=int_range, value_count=vc))
    if issues:
        raise SpecError(issues, source=source)
    return Schema(tuple(columns), source)


def _resolve_path(source: str) -> str:
    if os.path.isdir(source):
        for name in (_PBTXT, _JSON, os.path.join(".merlin", _JSON)):
            candidate = os.path.join(source, name)
            if os.path.isfile(candidate):
                return candidate
        raise _schema_error(
            "schema_not_found", f"no {_PBTXT} or {_JSON} in the folder {source!r}",
            "point at the schema file itself, or at the folder NVTabular wrote (it holds schema.pbtxt)", source)
    if not os.path.exists(source):
        parent = os.path.dirname(source) or "."
        hint = "give the path of a schema.pbtxt or Merlin schema.json (relative paths in a spec are relative to the spec file)"
        if os.path.isdir(parent):
            from specc.errors import did_you_mean
            near = did_you_mean(os.path.basename(source),
                                [f for f in os.listdir(parent) if f.endswith((".pbtxt", ".json"))])
            if near:
                hint = near
        raise _schema_error("schema_not_found", f"schema file {source!r} does not exist", hint, source)
    return source


def _looks_like_json(text: str) -> bool:
    return text.lstrip().startswith(("{", "["))


def _read_file(path: str) -> Schema:
    _, TensorflowMetadata = _quiet_merlin()
    try:
        text = read_text(path, limit=SCHEMA_LIMIT, what="schema file")
    except UnreadableFile as exc:
        raise _schema_error("schema_unreadable", str(exc),
                            "a schema is a UTF-8 text file: schema.pbtxt (protobuf text) or Merlin schema.json",
                            path) from None
    if not text.strip():
        raise _schema_error("schema_unreadable", f"schema file {path!r} is empty",
                            "write at least one `feature { ... }` block", path)
    is_json = path.endswith(".json") or _looks_like_json(text)
    try:
        if is_json:
            try:
                doc = parse_json(text, f"schema file {path!r}")
            except UnreadableFile as exc:
                raise _schema_error("schema_unreadable", str(exc),
                                    "a Merlin JSON schema is `{\"feature\": [{\"name\": ..., \"type\": ...}, ...]}`",
                                    path) from None
            if not isinstance(doc, dict) or not isinstance(doc.get("feature"), list):
                looks_spec = isinstance(doc, dict) and ("specc" in doc or "inputs" in doc)
                raise _schema_error(
                    "schema_unreadable",
                    f"{path!r} is JSON but not a Merlin schema (no top-level \"feature\" list)",
                    "this looks like a model spec, not a schema; pass the schema.pbtxt the spec's data was written with"
                    if looks_spec else
                    "a Merlin JSON schema is `{\"feature\": [{\"name\": ..., \"type\": ...}, ...]}`", path)
            tm = TensorflowMetadata.from_json(text)
        else:
            tm = TensorflowMetadata.from_proto_text(text)
        mschema = tm.to_merlin_schema()
    except SpecError:
        raise
    except Exception as exc:  # protobuf ParseError, merlin ValueError (tag collisions), ...
        kind = "JSON" if is_json else "protobuf text (pbtxt)"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if type(exc).__name__ == "ParseError":   # its message quotes the file's text: give the position alone
            msg = f"not protobuf text of a schema at line {exc.GetLine()}, column {exc.GetColumn()}"
        raise _schema_error("schema_unreadable", f"cannot parse {path!r} as a Merlin schema in {kind}: {msg}",
                            "check the file against a schema.pbtxt written by NVTabular / merlin-core "
                            "(`feature { name: ... type: INT int_domain { max: ... } annotation { tag: ... } }`)",
                            path) from None
    if len(mschema) == 0:
        raise _schema_error("schema_unreadable", f"schema file {path!r} has no features",
                            "is this a schema file? a schema lists its columns as `feature { ... }` blocks", path)
    return _from_merlin(mschema, path, _feature_issues(tm.proto_schema.feature))


def load_schema(source: "str | os.PathLike | Schema | Any") -> Schema:
    """Read a Merlin schema into the specc view.

    `source` is a `schema.pbtxt` (TF-metadata protobuf text), a Merlin / Transformers4Rec `schema.json`,
    a folder holding one of them, an in-memory `merlin.schema.Schema`, or a `specc.Schema` (returned as is).
    Problems raise `SpecError` with code `schema_not_found` or `schema_unreadable`, or with every
    `duplicate_column`, `invalid_tags` and `invalid_domain` found.
    """
    if isinstance(source, Schema):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = _resolve_path(os.fspath(source))
        return _read_file(path)
    mod = type(source).__module__ or ""
    if mod.startswith("merlin.schema") and hasattr(source, "column_schemas"):
        return _from_merlin(source, None)
    raise _schema_error("schema_unreadable",
                        f"cannot use a {type(source).__name__} as a schema",
                        "pass a path to schema.pbtxt / schema.json, a merlin.schema.Schema or a specc.Schema", None)


def to_merlin(schema: Schema):
    """The specc schema view as a `merlin.schema.Schema` (the inverse of `load_schema` on one)."""
    mschema_mod, _ = _quiet_merlin()
    import merlin.dtypes as md
    cols = []
    for c in schema.columns:
        tags = set(c.tags)
        for compound, parts in _COMPOUND.items():   # merlin spells item_id as item + id
            if compound in tags:
                tags = (tags - {compound}) | parts
        if c.is_list:
            tags.add("list")
        dtype = {"int": md.int64, "float": md.float32, "bool": md.boolean, "string": md.string}[c.dtype]
        props: dict = {}
        if c.dtype in ("bool", "string"):
            props["specc_dtype"] = c.dtype   # merlin's pbtxt writer records no type for these
        if c.cardinality is not None:
            props["domain"] = {"min": 0, "max": int(c.cardinality) - 1, "name": c.name}
        elif c.int_range is not None:
            props["domain"] = {"min": int(c.int_range[0]), "max": int(c.int_range[1]), "name": c.name}
        kwargs: dict = {}
        if c.is_list:
            if c.value_count is not None:
                lo, hi = c.value_count
                vc = {"min": int(lo or 0)}
                if hi is not None:
                    vc["max"] = int(hi)
                props["value_count"] = vc
                kwargs["dims"] = ((0, None), (vc["min"], vc.get("max")))
            else:
                kwargs["dims"] = ((0, None), (0, None))
        cols.append(mschema_mod.ColumnSchema(c.name, tags=sorted(tags), properties=props, dtype=dtype, **kwargs))
    return mschema_mod.Schema(cols)


def save_schema(schema: Schema, path: "str | os.PathLike") -> str:
    """Write `schema` as TF-metadata protobuf text through merlin-core. `path` is a file (any name) or a
    folder (written as `schema.pbtxt` inside it). Returns the path written."""
    _, TensorflowMetadata = _quiet_merlin()
    path = os.fspath(path)
    if os.path.isdir(path):
        folder, name = path, _PBTXT
    else:
        folder, name = os.path.dirname(path) or ".", os.path.basename(path)
        os.makedirs(folder, exist_ok=True)
    tm = TensorflowMetadata.from_merlin_schema(to_merlin(schema))
    from merlin.schema.io.schema_bp import FeatureType
    kinds = {c.name: c.dtype for c in schema.columns}
    for feature in tm.proto_schema.feature:
        if kinds.get(feature.name) == "string":
            feature.type = FeatureType.BYTES     # merlin leaves string columns untyped
    tm.to_proto_text_file(folder, name)
    return os.path.join(folder, name)
