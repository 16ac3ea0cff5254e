"""The front of `specc serve`: its public HTTP and gRPC ports, in front of tritonserver on private loopback ports.

Every inference request is checked first (`specc/serve_limits.py`: tritonserver itself has no shape or size
limit, and some declared shapes crash it; the inputs must also be the model's own, with at least one row, as
tritonserver's answers to those mislead); a bad one gets HTTP 400 / gRPC INVALID_ARGUMENT and never
reaches tritonserver, a body or message over the limit 413 / RESOURCE_EXHAUSTED.

Health is the supervisor's (`Upstream.ready`): while tritonserver starts or restarts, `/v2/health/ready`
and gRPC ServerReady/ModelReady say not ready (503 / false), liveness stays true, and every other call gets
503 / UNAVAILABLE. Everything else is forwarded unchanged (bodies, headers; responses are compressed as the
client's own Accept-Encoding asks, never otherwise).
"""
from __future__ import annotations

import asyncio
import os
import re
import threading
from dataclasses import dataclass

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")   # before grpc loads: tritonserver is started by fork
import grpc  # noqa: E402
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web  # noqa: E402

from specc.serve_limits import Rejected, ServedModel, check_request, http_inputs  # noqa: E402

_INFER_PATH = re.compile(r"^/+v2/+models/+([^/]+)(/+versions/+[^/]+)?/+infer/*$")   # loose: never let one by
_HOP_BY_HOP = {"host", "content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive"}
_GRPC_SERVICE = "/inference.GRPCInferenceService/"


@dataclass
class Upstream:
    """Where tritonserver listens now; written by the supervisor, read by the guard (attribute reads are atomic)."""
    http: str | None = None      # "127.0.0.1:PORT"
    grpc: str | None = None
    ready: bool = False


# ---------------------------------------------------------------------- HTTP

class _HttpFront:
    def __init__(self, upstream: Upstream, max_bytes: int):
        self.upstream = upstream
        self.max_bytes = max_bytes
        self.models: dict[str, ServedModel] = {}
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
        if request.method == "POST" and (infer := _INFER_PATH.match(request.path)):
            try:
                check_request(infer[1], http_inputs(body, request.headers.get("Inference-Header-Content-Length")),
                              self.max_bytes, self.models)
            except Rejected as exc:
                return _json_error(400, str(exc))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            # only the client's own Accept-Encoding: aiohttp would ask for gzip, which a plain client cannot read
            async with self.session.request(request.method, f"http://{self.upstream.http}{request.path_qs}",
                                            data=body, headers=headers,
                                            skip_auto_headers=("Accept-Encoding",)) as answer:
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
        self.models: dict[str, ServedModel] = {}
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
            check_request(infer.model_name, [(i.name, i.datatype, list(i.shape), None) for i in infer.inputs],
                          self.max_bytes, self.models)
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
            try:
                async for answer in call:
                    await answers.put(answer)
            except grpc.aio.AioRpcError as exc:   # tritonserver went away: the stream ends with its status
                await answers.put(exc)
            await answers.put(None)
        tasks = [asyncio.ensure_future(forward()), asyncio.ensure_future(collect())]
        try:
            while (answer := await answers.get()) is not None:
                if isinstance(answer, grpc.aio.AioRpcError):
                    await context.abort(answer.code(), answer.details() or "")
                yield answer
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

    def check_models(self, models: dict[str, ServedModel]) -> None:
        """From now on, requests for these models must name their inputs and, where batched, have rows."""
        self.http.models = self.grpc.models = models

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
