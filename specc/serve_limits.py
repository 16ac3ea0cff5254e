"""What `specc serve` lets through to tritonserver: the declared inputs of a KServe-v2 inference request.

The tritonserver that nvidia-pytriton ships (2.51) has no request-size or shape limit. Its HTTP front end
allocates the bytes that a JSON request's declared shape implies before it reads the data (`[2, 2**40]`
INT64: std::bad_alloc, abort), and the core computes byte sizes in wrapping 64-bit arithmetic (`[2**31,
2**31]`: segfault; `[2, 2**61]` with no data passes its byte-size check and kills the Python backend's stub,
before the model sees the request). Model configs can bound the batch but no other dimension. So the guard
(`specc/serve_guard.py`) checks every inference request here first: a known datatype, shapes of non-negative
integers whose byte size (exact integers, no overflow) stays within the limit, summed over the inputs too,
and for JSON data as many values as the shape says, each of the datatype's kind and range. For the models
`specc serve` wrote, it also checks that the inputs are the model's own and that a batched model gets at least
one row (tritonserver answers these too, in words that mislead: "expected 2 inputs but got 3 inputs ...",
"expected 3 string elements ... got 0" for a [0, 3] BYTES input).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

ITEM_BYTES = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
              "INT64": 8, "FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8, "BYTES": 1}   # BYTES: at least 1 per element


class Rejected(Exception):
    """A request that must not reach tritonserver; the message goes back to the client."""


@dataclass(frozen=True)
class ServedModel:
    """What the guard knows of a model that `specc serve` wrote: its input names, and whether the first
    dimension of each input is the batch (the padded model; the ragged one takes whole shapes)."""
    inputs: tuple[str, ...]
    batched: bool


def check_request(model: str, inputs: list, max_bytes: int, models: dict[str, ServedModel]) -> None:
    """An inference request for `model` with declared inputs [(name, datatype, shape, values or None)] ->
    Rejected if any could be too large or, for a model in `models`, they are not the inputs it takes."""
    check_inputs(inputs, max_bytes)
    if model in models:
        check_model_inputs(model, models[model], inputs)


def check_model_inputs(model: str, served: ServedModel, inputs: list) -> None:
    """Rejected unless the inputs are exactly the model's and, for a batched model, each has a row."""
    names = [name for name, _, _, _ in inputs]
    its_inputs = f"(its inputs: {', '.join(served.inputs)})"
    unknown = [name for name in names if name not in served.inputs]
    if unknown:
        raise Rejected(f"input {unknown[0]!r} is not an input of model {model!r} {its_inputs}")
    missing = [name for name in served.inputs if name not in names]
    if missing:
        raise Rejected(f"model {model!r} needs input(s) {', '.join(missing)} {its_inputs}")
    empty = [(name, shape) for name, _, shape, _ in inputs if served.batched and shape and shape[0] == 0]
    if empty:
        name, shape = empty[0]
        raise Rejected(f"input {name!r} has shape {list(shape)}: inputs must have at least one row "
                       "(batch dimension 0)")


def check_inputs(inputs, max_bytes: int) -> None:
    """Declared inputs [(name, datatype, shape, values or None)] -> Rejected if any could be too large."""
    total = 0
    for name, datatype, shape, values in inputs:
        if datatype not in ITEM_BYTES:
            raise Rejected(f"input {name!r} has datatype {datatype!r}; expected one of {', '.join(ITEM_BYTES)}")
        if not isinstance(shape, (list, tuple)) or not all(type(d) is int and d >= 0 for d in shape):
            raise Rejected(f"input {name!r} has shape {shape!r}; a shape is a list of non-negative integers")
        count = math.prod(shape)
        total += count * ITEM_BYTES[datatype]
        if total > max_bytes:
            raise Rejected(f"input {name!r} of shape {list(shape)} ({datatype}) makes the request larger than "
                           f"the limit of {max_bytes} bytes (--max-request-mb)")
        if values is not None:
            _check_values(name, datatype, shape, count, values)


def _check_values(name: str, datatype: str, shape, count: int, values: list) -> None:
    """JSON data: as many values as the shape needs, each of the datatype's kind and range (Triton answers
    these with HTTP 500, or reads a wrapped integer)."""
    flat = list(_flatten(values))
    if len(flat) != count:
        raise Rejected(f"input {name!r} has {len(flat)} values, its shape {list(shape)} needs {count}")
    kind, bits = datatype.rstrip("0123456789"), int(datatype.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ") or 0)
    if kind in ("INT", "UINT"):
        low, high = (-(1 << bits - 1), (1 << bits - 1) - 1) if kind == "INT" else (0, (1 << bits) - 1)
        bad = [v for v in flat if type(v) is not int or not low <= v <= high]
        expected = f"integers in [{low}, {high}]"
    else:
        allowed = {"BOOL": (bool,), "BYTES": (str,)}.get(datatype, (int, float))
        bad = [v for v in flat if type(v) not in allowed]
        expected = {"BOOL": "true or false", "BYTES": "strings"}.get(datatype, "numbers")
    if bad:
        raise Rejected(f"input {name!r} ({datatype}) holds {json.dumps(bad[0])[:40]}; its values must be {expected}")


def _flatten(values):
    for v in values:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


def http_inputs(body: bytes, header_length: str | None) -> list:
    """The declared inputs of a KServe-v2 HTTP infer request (JSON, or a JSON header before binary data)."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise Rejected(f"Inference-Header-Content-Length {header_length!r} does not fit the body "
                           f"({len(body)} bytes)")
        body = body[:int(header_length)]
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        raise Rejected("the request body is not valid JSON") from None
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise Rejected('the request needs "inputs": a list of {"name", "shape", "datatype"} objects')
    return [(i.get("name"), i.get("datatype"), i.get("shape"), i["data"] if isinstance(i.get("data"), list) else None)
            for i in inputs]
