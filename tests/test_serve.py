"""specc serve: a real Triton Inference Server (PyTriton) on loopback, queried with tritonclient over HTTP."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pytriton")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

import specc  # noqa: E402
from tests.helpers import descendants  # noqa: E402

pytestmark = pytest.mark.slow
K = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from specc.synth import default_schema, synthesize
    from specc.train import train
    root = tmp_path_factory.mktemp("serve_run")
    synthesize(default_schema(), root / "data", n_train=200, n_valid=40, seed=0)
    spec = Path(__file__).resolve().parent.parent / "specs" / "multitask.json"
    train(spec, root / "data" / "train.parquet", root / "run", eval_data=root / "data" / "valid.parquet",
          epochs=1, progress=False, log=lambda m: None)
    return root / "run"


def _wait_ready(client, proc, log, timeout=180, model="multitask") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if client.is_server_ready() and client.is_model_ready(model) and client.is_model_ready(f"{model}_ragged"):
                return
        except Exception:
            pass
        time.sleep(0.2)
    proc.kill()
    log.seek(0)
    pytest.fail(f"server did not become ready:\n{log.read()[-4000:]}")


def _stale_workspaces(tmp: Path) -> dict:
    """A workspace of a server that is gone (its pid has exited) and one of a live process (this one)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    own = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    folders = {"stale": tmp / f"specc-serve-{dead.pid}.1-abc", "live": tmp / f"specc-serve-{os.getpid()}.{own}-def"}
    for folder in folders.values():
        (folder / "models").mkdir(parents=True)
        (folder / "tritonserver.log").write_text("left behind")
    return folders


def _launch(run_dir, tmp: Path, log, *flags):
    """`specc serve RUN_DIR` in a process of its own, with TMPDIR `tmp`; (process, HTTP, gRPC, metrics ports)."""
    port, grpc, metrics = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "specc.cli", "serve", str(run_dir), "--port", str(port),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--max-batch-size", "16",
                             "--k", str(K), *flags], stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, port, grpc, metrics


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_tmp")   # the server's TMPDIR, with folders of earlier servers
    workspaces = _stale_workspaces(tmp)
    yield from serving(run_dir, tmp_path_factory, tmp, "--max-request-mb", "1", workspaces=workspaces)


def serving(run_dir, tmp_path_factory, tmp, *flags, model="multitask", **extra):
    """A fixture's body: `specc serve RUN_DIR` started and ready, then stopped by SIGTERM with nothing left."""
    log = open(tmp_path_factory.mktemp("serve_log") / "serve.log", "w+")
    proc, port, grpc, metrics = _launch(run_dir, tmp, log, *flags)
    url = f"127.0.0.1:{port}"
    client = httpclient.InferenceServerClient(url)
    _wait_ready(client, proc, log, model=model)
    yield {"url": url, "client": client, "proc": proc, "metrics": metrics, "grpc": grpc, "log": log, "tmp": tmp,
           **extra}
    client.close()
    family = {proc.pid} | descendants(proc.pid)   # after any restart
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(1)
    left = [p for p in family if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes left running after SIGTERM: {left}"
    assert not list(tmp.glob(f"specc-serve-{proc.pid}.*")), "the server's workspace is left behind"


def _batch(model, B, seed=0):
    return model.random_batch(B, seed=seed)


def _request(batch, overrides=None):
    inputs = []
    for name, t in {**batch, **(overrides or {})}.items():
        a = t.numpy() if torch.is_tensor(t) else t
        if a.ndim == 1:
            a = a[:, None]
        dtype = {np.dtype("int64"): "INT64", np.dtype("float32"): "FP32", np.dtype("int32"): "INT32",
                 np.dtype("float64"): "FP64"}[a.dtype]
        i = httpclient.InferInput(name, list(a.shape), dtype)
        i.set_data_from_numpy(a)
        inputs.append(i)
    return inputs


def test_http_round_trip_equals_recommend(server, run_dir):
    model = specc.load(run_dir)
    client = server["client"]
    for B, seed in ((1, 0), (16, 1)):
        batch = _batch(model, B, seed)
        result = client.infer("multitask", _request(batch))
        scores, ids = model.recommend(batch, k=K)
        np.testing.assert_array_equal(result.as_numpy("item_ids"), ids.numpy())
        np.testing.assert_allclose(result.as_numpy("scores"), scores.numpy(), rtol=1e-5, atol=1e-5)
        p = result.as_numpy("purchase")
        assert p.shape == (B, 1) and ((p >= 0) & (p <= 1)).all()
        assert result.as_numpy("revenue").shape == (B, 1)


def test_ragged_model(server, run_dir):
    model = specc.load(run_dir)
    batch = _batch(model, 5, seed=3)
    lengths = (batch[model.sequence_column] != 0).sum(1)
    inputs = []
    for c in model.list_columns:
        valid = torch.arange(batch[c].shape[1])[None] < lengths[:, None]
        for name, a in ((f"{c}__values", batch[c][valid].numpy()),
                        (f"{c}__offsets", np.concatenate([[0], lengths.cumsum(0).numpy()]).astype(np.int64))):
            i = httpclient.InferInput(name, list(a.shape), "FP32" if a.dtype == np.float32 else "INT64")
            i.set_data_from_numpy(a)
            inputs.append(i)
    for c in model.scalar_columns:
        a = batch[c].numpy()
        i = httpclient.InferInput(c, list(a.shape), "FP32" if a.dtype == np.float32 else "INT64")
        i.set_data_from_numpy(a)
        inputs.append(i)
    result = server["client"].infer("multitask_ragged", inputs)
    np.testing.assert_array_equal(result.as_numpy("item_ids"), model.recommend(batch, k=K)[1].numpy())
    # another list column whose rows do not line up with the items' is refused, not scored misaligned
    other = next(c for c in model.list_columns if c != model.sequence_column)
    shifted = np.concatenate([[0, 1], lengths.cumsum(0).numpy()[1:]]).astype(np.int64)
    for i in inputs:
        if i.name() == f"{other}__offsets":
            i.set_data_from_numpy(shifted)
    with pytest.raises(InferenceServerException) as info:
        server["client"].infer("multitask_ragged", inputs)
    assert "400" in str(info.value.status()) and "offsets differ" in info.value.message()


def _expect_400(client, inputs, match):
    with pytest.raises(InferenceServerException) as info:
        client.infer("multitask", inputs)
    assert "400" in str(info.value.status()), (info.value.status(), info.value.message())
    assert match in info.value.message(), info.value.message()


def test_bad_requests_get_400_and_server_survives(server, run_dir):
    model = specc.load(run_dir)
    client = server["client"]
    batch = _batch(model, 4)
    item = model.sequence_column
    renamed = dict(batch)
    renamed["items"] = renamed.pop(item)
    _expect_400(client, _request(renamed), "items")                                  # wrong column name
    _expect_400(client, _request(batch, {item: batch[item].int()}), "INT32")         # wrong dtype
    too_big = batch[item].clone()
    too_big[1, 0] = 10 ** 6
    _expect_400(client, _request(batch, {item: too_big}), "outside the catalog")     # id outside the catalog
    negative = batch[item].clone()
    negative[0, 0] = -3
    _expect_400(client, _request(batch, {item: negative}), "outside the catalog")
    empty = batch[item].clone()
    empty[2] = 0
    _expect_400(client, _request(batch, {item: empty}), "empty session")            # empty session
    big = _batch(model, 17)
    _expect_400(client, _request(big), "batch")                                      # oversized batch
    nan = batch["price-list"].clone()
    nan[0, 0] = float("nan")
    _expect_400(client, _request(batch, {"price-list": nan}), "non-finite")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("multitask")
    result = client.infer("multitask", _request(batch))
    np.testing.assert_array_equal(result.as_numpy("item_ids"), model.recommend(batch, k=K)[1].numpy())


def test_bad_request_does_not_fail_its_batch_neighbours(server, run_dir):
    """Requests batched together with a bad one are still answered."""
    from concurrent.futures import ThreadPoolExecutor
    model = specc.load(run_dir)
    good = _batch(model, 3, seed=7)
    bad = dict(good)
    bad[model.sequence_column] = good[model.sequence_column] * 0
    expected = model.recommend(good, k=K)[1].numpy()

    def call(req):
        c = httpclient.InferenceServerClient(server["url"])
        try:
            return c.infer("multitask", _request(req)).as_numpy("item_ids")
        except InferenceServerException as exc:
            return exc
        finally:
            c.close()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, [good, bad] * 8))
    for i, r in enumerate(results):
        if i % 2 == 0:
            np.testing.assert_array_equal(r, expected)
        else:
            assert isinstance(r, InferenceServerException) and "empty session" in r.message()


def test_grpc_and_metrics(server, run_dir):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    model = specc.load(run_dir)
    batch = _batch(model, 2, seed=5)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    inputs = []
    for name, t in batch.items():
        a = t.numpy() if t.dim() == 2 else t.numpy()[:, None]
        i = grpcclient.InferInput(name, list(a.shape), "FP32" if a.dtype == np.float32 else "INT64")
        i.set_data_from_numpy(a)
        inputs.append(i)
    result = client.infer("multitask", inputs)
    np.testing.assert_array_equal(result.as_numpy("item_ids"), model.recommend(batch, k=K)[1].numpy())
    client.close()
    text = urllib.request.urlopen(f"http://127.0.0.1:{server['metrics']}/metrics", timeout=10).read().decode()
    assert 'nv_inference_request_success{model="multitask"' in text


# ---------------------------------------------------------------------- requests that took tritonserver down

def _post(server, body: bytes, headers=None, model="multitask"):
    request = urllib.request.Request(f"http://{server['url']}/v2/models/{model}/infer", data=body,
                                     headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_responses_are_compressed_only_when_the_client_asks(server, run_dir):
    import gzip
    import http.client
    import json
    batch = _batch(specc.load(run_dir), 2, seed=8)
    body = json.dumps({"inputs": [{"name": c, "shape": list(t.shape if t.dim() == 2 else (t.shape[0], 1)),
                                   "datatype": "FP32" if t.dtype == torch.float32 else "INT64",
                                   "data": t.reshape(-1).tolist()} for c, t in batch.items()]}).encode()
    answers = {}
    for asked in (None, "gzip"):
        connection = http.client.HTTPConnection(server["url"], timeout=60)
        connection.putrequest("POST", "/v2/models/multitask/infer", skip_accept_encoding=True)   # like curl
        for key, value in (("Content-Length", str(len(body))), ("Accept-Encoding", asked)):
            if value:
                connection.putheader(key, value)
        connection.endheaders(body)
        answer = connection.getresponse()
        answers[asked] = (answer.status, answer.getheader("Content-Encoding"), answer.read())
        connection.close()
    assert answers[None][:2] == (200, None) and json.loads(answers[None][2])["outputs"]
    assert answers["gzip"][:2] == (200, "gzip") and json.loads(gzip.decompress(answers["gzip"][2])) == \
        json.loads(answers[None][2])


def _json_request(shape, data=(5, 6), datatype="INT64") -> bytes:
    import json
    return json.dumps({"inputs": [{"name": "item_id-list", "shape": shape, "datatype": datatype,
                                   "data": list(data)}]}).encode()


def _binary_request(batch, item_shape, item_bytes: bytes):
    """A binary-tensor HTTP request of `batch` whose item column declares `item_shape` and carries `item_bytes`."""
    import json
    inputs, blob = [], b""
    for name, t in batch.items():
        a = t.numpy() if t.dim() == 2 else t.numpy()[:, None]
        data, shape = (item_bytes, item_shape) if name == "item_id-list" else (a.tobytes(), list(a.shape))
        inputs.append({"name": name, "shape": shape, "datatype": "FP32" if a.dtype == np.float32 else "INT64",
                       "parameters": {"binary_data_size": len(data)}})
        blob += data
    header = json.dumps({"inputs": inputs}).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header))}


def _grpc_infer(server, batch, item_shape, item_bytes: bytes):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    request = service_pb2.ModelInferRequest(model_name="multitask")
    for name, t in batch.items():
        a = t.numpy() if t.dim() == 2 else t.numpy()[:, None]
        entry = request.inputs.add(name=name, datatype="FP32" if a.dtype == np.float32 else "INT64")
        entry.shape.extend(item_shape if name == "item_id-list" else a.shape)
        request.raw_input_contents.append(item_bytes if name == "item_id-list" else a.tobytes())
    with grpc.insecure_channel(f"127.0.0.1:{server['grpc']}") as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def _tritonserver_pid(server) -> int:
    pids = [p for p in descendants(server["proc"].pid) if _comm(p) == "tritonserver"]
    assert len(pids) == 1, pids
    return pids[0]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _assert_answers(server, model, seed=11):
    batch = _batch(model, 3, seed=seed)
    result = server["client"].infer("multitask", _request(batch))
    np.testing.assert_array_equal(result.as_numpy("item_ids"), model.recommend(batch, k=K)[1].numpy())
    np.testing.assert_allclose(result.as_numpy("scores"), model.recommend(batch, k=K)[0].numpy(), rtol=1e-5,
                               atol=1e-5)


def test_requests_that_crashed_tritonserver_get_400_and_it_keeps_serving(server, run_dir):
    """Declared shapes whose byte size is huge or wraps around 64 bits: JSON data (tritonserver aborted with
    std::bad_alloc, or segfaulted), binary and gRPC tensors of no bytes (the Python stub died)."""
    import grpc
    model = specc.load(run_dir)
    tritonserver = _tritonserver_pid(server)
    batch = _batch(model, 2, seed=4)
    limit = "larger than the limit of 1048576 bytes"
    for shape in ([2, 1099511627776], [2147483648, 2147483648], [2, 2 ** 61]):
        status, body = _post(server, _json_request(shape))
        assert status == 400 and limit.encode() in body, (shape, status, body)
        _assert_answers(server, model)
        status, body = _post(server, *_binary_request(batch, shape, b""))
        assert status == 400 and limit.encode() in body, (shape, status, body)
        _assert_answers(server, model)
        code, details = _grpc_infer(server, batch, shape, b"")
        assert code == grpc.StatusCode.INVALID_ARGUMENT and limit in details, (shape, code, details)
        _assert_answers(server, model)
    for body, problem in ((_json_request([2, 2], datatype="FOO"), b"datatype"),
                          (_json_request([2, -1]), b"non-negative integers"),
                          (_json_request([2, 3]), b"has 2 values, its shape [2, 3] needs 6"),
                          (_json_request([2], data=(5, 6.5)), b"holds 6.5"),   # Triton: HTTP 500
                          (b'{"inputs": [', b"not valid JSON"),
                          (b"0" * (2 << 20), b"request body is larger than the limit")):
        status, answer = _post(server, body)
        assert status in (400, 413) and problem in answer, (status, answer)
        _assert_answers(server, model)
    code, _ = _grpc_infer(server, batch, [2, 4], b"\0" * (2 << 20))   # past the gRPC message limit
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    _assert_answers(server, model)
    assert _tritonserver_pid(server) == tritonserver, "tritonserver was restarted"


def test_grpc_stream_checks_each_request(server, run_dir):
    import queue
    grpcclient = pytest.importorskip("tritonclient.grpc")
    model = specc.load(run_dir)
    batch = _batch(model, 2, seed=6)
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    good = []
    for name, t in batch.items():
        a = t.numpy() if t.dim() == 2 else t.numpy()[:, None]
        good.append(grpcclient.InferInput(name, list(a.shape), "FP32" if a.dtype == np.float32 else "INT64"))
        good[-1].set_data_from_numpy(a)
    client.async_stream_infer("multitask", good)
    huge = grpcclient.InferInput("item_id-list", [2, 2 ** 61], "INT64")   # declared, never sent
    client.async_stream_infer("multitask", [huge] + good[1:])
    results = [answers.get(timeout=60) for _ in range(2)]
    client.stop_stream()
    client.close()
    errors = [str(e) for _, e in results if e is not None]
    answered = [r for r, e in results if e is None]
    assert len(errors) == 1 and "larger than the limit" in errors[0], errors
    np.testing.assert_array_equal(answered[0].as_numpy("item_ids"), model.recommend(batch, k=K)[1].numpy())


def test_stale_workspace_removed_at_start_and_live_one_kept(server):
    assert not server["workspaces"]["stale"].exists()
    assert (server["workspaces"]["live"] / "tritonserver.log").exists()
    own = list(server["tmp"].glob(f"specc-serve-{server['proc'].pid}.*"))
    assert len(own) == 1 and (own[0] / "models").is_dir(), own


def _wait_not_ready_then_ready(server) -> None:
    """Health turns not-ready while tritonserver restarts, then ready again."""
    client = server["client"]
    deadline = time.time() + 30
    while client.is_server_ready():
        assert time.time() < deadline, "health stayed ready after a crash"
        time.sleep(0.05)
    assert client.is_server_live()
    _wait_ready(client, server["proc"], server["log"])


def test_crashes_are_restarted_and_health_is_truthful(server, run_dir):
    model = specc.load(run_dir)
    before = _tritonserver_pid(server)
    os.kill(before, signal.SIGKILL)
    _wait_not_ready_then_ready(server)
    assert _tritonserver_pid(server) != before
    _assert_answers(server, model)
    # a dead Python-backend stub: Triton itself would keep the model "ready" and answer 500
    stub = next(p for p in descendants(_tritonserver_pid(server)) if _comm(p) == "triton_python_b")
    os.kill(stub, signal.SIGKILL)
    _wait_not_ready_then_ready(server)
    _assert_answers(server, model)
    server["log"].seek(0)
    log = server["log"].read()
    assert "tritonserver exited (killed by SIGKILL (-9))" in log and "lost a Python-backend stub" in log, log
    assert log.count("serving again") == 2, log
    retries = log.count("restarting tritonserver (") - 2   # a restart that did not start (a port taken) is retried
    assert retries == log.count("did not start again"), log


def test_gives_up_after_too_many_crashes(run_dir, tmp_path):
    with open(tmp_path / "serve.log", "w+") as log:
        proc, port, _, _ = _launch(run_dir, tmp_path, log, "--max-restarts", "0")
        try:
            _wait_ready(httpclient.InferenceServerClient(f"127.0.0.1:{port}"), proc, log)
            family = {proc.pid} | descendants(proc.pid)
            os.kill(next(p for p in family if _comm(p) == "tritonserver"), signal.SIGKILL)
            assert proc.wait(timeout=60) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
        log.seek(0)
        text = log.read()
    assert "giving up: 1 tritonserver crash(es) within 300 s, more than --max-restarts 0 allows" in text, text
    time.sleep(1)
    assert not [p for p in family if _alive(p)] and not list(tmp_path.glob("specc-serve-*"))
