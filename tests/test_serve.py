"""specc serve: a real Triton Inference Server (PyTriton) on loopback, queried with tritonclient over HTTP."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch

pytest.importorskip("pytriton")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

import specc  # noqa: E402

pytestmark = pytest.mark.slow
K = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from pathlib import Path

    from specc.synth import default_schema, synthesize
    from specc.train import train
    root = tmp_path_factory.mktemp("serve_run")
    synthesize(default_schema(), root / "data", n_train=200, n_valid=40, seed=0)
    spec = Path(__file__).resolve().parent.parent / "specs" / "multitask.json"
    train(spec, root / "data" / "train.parquet", root / "run", eval_data=root / "data" / "valid.parquet",
          epochs=1, progress=False, log=lambda m: None)
    return root / "run"


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    port, grpc, metrics = _free_port(), _free_port(), _free_port()
    log = open(tmp_path_factory.mktemp("serve_log") / "serve.log", "w+")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.Popen([sys.executable, "-m", "specc.cli", "serve", str(run_dir), "--port", str(port),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--max-batch-size", "16",
                             "--k", str(K)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"127.0.0.1:{port}"
    client = httpclient.InferenceServerClient(url)
    deadline = time.time() + 180
    ready = False
    while time.time() < deadline and proc.poll() is None:
        try:
            ready = client.is_server_ready() and client.is_model_ready("multitask") and \
                client.is_model_ready("multitask_ragged")
        except Exception:
            ready = False
        if ready:
            break
        time.sleep(0.5)
    if not ready:
        proc.kill()
        log.seek(0)
        pytest.fail(f"server did not become ready:\n{log.read()[-4000:]}")
    family = {proc.pid} | _descendants(proc.pid)
    yield {"url": url, "client": client, "proc": proc, "metrics": metrics, "family": family, "grpc": grpc}
    client.close()
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
