"""The front of `specc serve`: its public HTTP and gRPC ports, in front of tritonserver on private loopback ports.

Why it exists: the tritonserver that nvidia-pytriton ships (2.51) has no request-size or shape limit. Its HTTP
front end allocates the bytes that a JSON request's declared shape implies before it reads the data
(`[2, 2**40]` INT64: std::bad_alloc, abort), and the core computes byte sizes in wrapping 64-bit arithmetic
(`[2**31, 2**31]`: segfault; `[2, 2**61]` with no data passes its byte-size check and kills the Python
backend's stub). Model configs can bound the batch but no other dimension. So every inference request is
checked here first: a known datatype, shapes of non-negative integers whose byte size (exact integers, no
overflow) stays within `max_request_bytes`, the whole request within it too, and for JSON data as many values
as the shape says. A bad one gets HTTP 400 / gRPC INVALID_ARGUMENT and never reaches tritonserver.

Health is the supervisor's (`Upstream.ready`): while tritonserver starts or restarts, `/v2/health/ready`
and gRPC ServerReady/ModelReady say not ready (503 / false), liveness stays true, and every other call gets
503 / UNAVAILABLE. Everything else is forwarded unchanged (bodies, headers, compression of responses).
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import threading
from dataclasses import dataclass

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")   # before grpc loads: tritonserver is started by fork
import grpc  # noqa: E402
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web  # noqa: E402

ITEM_BYTES = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
              "INT64": 8, "FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8, "BYTES": 1}   # BYTES: at least 1 per element
_INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
_HOP_BY_HOP = {"host", "content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive"}
_GRPC_SERVICE = "/inference.GRPCInferenceService/"


class Rejected(Exception):
    """A request that must not reach tritonserver; the message goes back to the client."""


@dataclass
class Upstream:
    """Where tritonserver listens now; written by the supervisor, read by the guard (attribute reads are atomic)."""
    http: str | None = None      # "127.0.0.1:PORT"
    grpc: str | None = None
    ready: bool = False


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


# ---------------------------------------------------------------------- HTTP

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


class _HttpFront:
    def __init__(self, upstream: Upstream, max_bytes: int):
        self.upstream = upstream
        self.max_bytes = max_bytes
        self.session: ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/health/live":   # specc serve is: it restarts tritonserver or exits
            return web.Response(status=200)
        if not self.upstream.ready:
            return _json_error(503, "tritonserver is starting or restarting; try again shortly")
        try:
            body = await request.read()   # decompressed, at most client_max_size bytes
        except web.HTTPRequestEntityTooLarge:
            return _json_error(413, f"the request body is larger than the limit of {self.max_bytes} bytes "
                                    "(--max-request-mb)")
        if request.method == "POST" and _INFER_PATH.match(request.path):
            try:
                check_inputs(http_inputs(body, request.headers.get("Inference-Header-Content-Length")),
                             self.max_bytes)
            except Rejected as exc:
                return _json_error(400, str(exc))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            async with self.session.request(request.method, f"http://{self.upstream.http}{request.path_qs}",
                                            data=body, headers=headers) as answer:
                content = await answer.read()
                out_headers = {k: v for k, v in answer.headers.items()
                               if k.lower() not in _HOP_BY_HOP or k.lower() == "content-encoding"}
                return web.Response(status=answer.status, body=content, headers=out_headers)
        except (ClientError, asyncio.TimeoutError, OSError):
            return _json_error(503, "tritonserver is not answering (it is being restarted); try again shortly")

    async def start(self, host: str, port: int) -> web.AppRunner:
        # responses pass through as tritonserver compressed them
        self.session = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False,
                                     timeout=ClientTimeout(total=None, sock_connect=5))
        app = web.Application(client_max_size=self.max_bytes)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# ---------------------------------------------------------------------- gRPC

class _GrpcFront(grpc.GenericRpcHandler):
    """Forwards every method of Triton's GRPCInferenceService as bytes; inference requests are checked first."""

    def __init__(self, upstream: Upstream, max_bytes: int):
        from tritonclient.grpc import service_pb2
        self.pb = service_pb2
        self.upstream = upstream
        self.max_bytes = max_bytes
        self.channel = None
        self.target = None

    def service(self, details):
        method = details.method
        if not method.startswith(_GRPC_SERVICE):
            return None
        if method.endswith("/ModelStreamInfer"):
            return grpc.stream_stream_rpc_method_handler(self._stream)

        async def unary(request, context):
            return await self._unary(method, request, context)
        return grpc.unary_unary_rpc_method_handler(unary)

    def _channel(self):
        if self.target != self.upstream.grpc:   # tritonserver restarted on other ports
            if self.channel is not None:
                asyncio.ensure_future(self.channel.close())
            self.target = self.upstream.grpc
            self.channel = grpc.aio.insecure_channel(self.target, options=_grpc_options(self.max_bytes))
        return self.channel

    def _check(self, request: bytes) -> str | None:
        try:
            infer = self.pb.ModelInferRequest.FromString(request)
        except Exception:   # noqa: BLE001 - protobuf's DecodeError, whatever the implementation
            return "the request is not a ModelInferRequest"
        try:
            check_inputs([(i.name, i.datatype, list(i.shape), None) for i in infer.inputs], self.max_bytes)
        except Rejected as exc:
            return str(exc)
        return None

    async def _unary(self, method: str, request: bytes, context):
        name = method.rsplit("/", 1)[1]
        if name == "ServerLive":
            return self.pb.ServerLiveResponse(live=True).SerializeToString()
        if not self.upstream.ready:
            if name in ("ServerReady", "ModelReady"):
                return getattr(self.pb, f"{name}Response")(ready=False).SerializeToString()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "tritonserver is starting or restarting")
        if name == "ModelInfer" and (problem := self._check(request)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            return await self._channel().unary_unary(method)(request, metadata=context.invocation_metadata(),
                                                             timeout=context.time_remaining())
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")

    async def _stream(self, requests, context):
        if not self.upstream.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "tritonserver is starting or restarting")
        call = self._channel().stream_stream(_GRPC_SERVICE + "ModelStreamInfer")(
            metadata=context.invocation_metadata())
        answers: asyncio.Queue = asyncio.Queue()

        async def forward():
            async for request in requests:
                problem = self._check(request)
                if problem:   # this request alone fails, in the stream's own error form
                    await answers.put(self.pb.ModelStreamInferResponse(error_message=problem).SerializeToString())
                else:
                    await call.write(request)
            await call.done_writing()

        async def collect():
            async for answer in call:
                await answers.put(answer)
            await answers.put(None)
        tasks = [asyncio.ensure_future(forward()), asyncio.ensure_future(collect())]
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        finally:
            for task in tasks:
                task.cancel()


def _grpc_options(max_bytes: int) -> list:
    limit = max_bytes + (1 << 20)   # room for the message's own fields
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


# ---------------------------------------------------------------------- both, on a loop of their own

class Guard:
    """Runs the HTTP and gRPC fronts on one event loop in a daemon thread; `stop()` closes both."""

    def __init__(self, upstream: Upstream, host: str, http_port: int, grpc_port: int, max_bytes: int):
        self.loop = asyncio.new_event_loop()
        self.http = _HttpFront(upstream, max_bytes)
        self.grpc = _GrpcFront(upstream, max_bytes)
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._args = host, http_port, grpc_port, max_bytes
        self._thread = threading.Thread(target=self._run, name="specc-serve-guard", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.started.wait()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._open())
        except BaseException as exc:   # noqa: BLE001 - handed to the starting thread (a port taken, ...)
            self.error = exc
            self.started.set()
            return
        self.started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._close())
        self.loop.close()

    async def _open(self) -> None:
        host, http_port, grpc_port, max_bytes = self._args
        self._runner = await self.http.start(host, http_port)
        self._server = grpc.aio.server(handlers=[self.grpc], options=_grpc_options(max_bytes))
        if self._server.add_insecure_port(f"{host}:{grpc_port}") == 0:
            raise OSError(f"cannot listen on {host}:{grpc_port}")
        await self._server.start()

    async def _close(self) -> None:
        await self._server.stop(grace=1)
        await self._runner.cleanup()
        await self.http.session.close()
        if self.grpc.channel is not None:
            await self.grpc.channel.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
