"""What raw ids cost at `specc serve`: the same sessions as raw strings (`--ids raw`) and as the model's ids
(`--ids internal`), through the server (HTTP on loopback, binary tensors) and through the backend's handler
in-process (validate, encode, graph, decode: what the stub does per request).

    /work/venv/bin/python benchmarks/serve_ids.py [--items 2000] [--sessions 3000] [--requests 300] [--batch 1 32]

Prepares a synthetic event log (string item ids, an integer brand column) with `specc data prepare`, trains a
small SASRec-like run for 1 epoch, then serves it once per id form. Prints p50/p99 per batch size."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _prepared_run(root: Path, n_items: int, n_sessions: int) -> Path:
    import polars as pl
    from specc.cli import main
    rng = np.random.default_rng(0)
    rows = []
    for s in range(n_sessions):
        start = datetime(2024, 1, 1) + timedelta(minutes=s)
        for j, item in enumerate(rng.integers(0, n_items, rng.integers(5, 31))):
            rows.append((f"s{s}", f"item-{item:06d}", int(item) % 50, start + timedelta(seconds=j)))
    log = pl.DataFrame(rows, schema=["session_id", "item_id", "brand", "ts"], orient="row")
    log.write_parquet(root / "log.parquet")
    assert main(["data", "prepare", str(root / "log.parquet"), "--out", str(root / "data"), "--item", "item_id",
                 "--time", "ts", "--session", "session_id", "--categorical", "brand", "--quiet"]) == 0
    spec = {"specc": 1, "name": "shop",
            "inputs": {"max_sequence_length": 30, "features": ["item_id-list", "brand-list"],
                       "embeddings": {"default_dim": 64}},
            "masking": {"kind": "causal"},
            "body": {"kind": "transformer", "architecture": "native", "d_model": 64, "n_head": 2, "n_layer": 2},
            "tasks": [{"kind": "next_item"}], "training": {"batch_size": 256, "epochs": 1}}
    (root / "spec.json").write_text(json.dumps(spec))
    assert main(["train", str(root / "spec.json"), "--data", str(root / "data" / "train"), "--out",
                 str(root / "run"), "--quiet"]) == 0
    return root / "run"


def _requests(run: Path, valid: Path, B: int) -> dict:
    """The first B valid sessions, padded, in both forms: {"raw": {col: array}, "internal": {col: array}}."""
    import polars as pl
    from specc.mappings import Mapping
    table = pl.read_parquet(valid).head(B)
    L = max(len(v) for v in table["item_id-list"].to_list())
    out = {"raw": {}, "internal": {}}
    for column, pad in (("item_id-list", ""), ("brand-list", -1)):
        ids = table[column].to_list()
        out["internal"][column] = np.array([v + [0] * (L - len(v)) for v in ids], dtype=np.int64)
        raw = Mapping.load(run, column).decode(ids)
        raw = [v + [pad] * (L - len(v)) for v in raw]
        out["raw"][column] = np.array(raw, dtype=object if pad == "" else np.int64)
    return out


def _time(fns: dict, n: int) -> dict:
    """p50 and p99 in ms of each function, called in turn (so that a slower spell of the machine hits all alike)."""
    times = {key: [] for key in fns}
    for i in range(n + 20):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= 20:
                times[key].append(time.perf_counter() - t0)
    return {key: (float(np.percentile(t, 50) * 1e3), float(np.percentile(t, 99) * 1e3)) for key, t in times.items()}


def _in_process(run: Path, requests: dict, n: int, root: Path) -> dict:
    import torch
    from specc.serve import write_repository
    from specc.serve_handler import Handler, Signature
    from specc.serve_ids import RawIds
    torch.set_num_threads(1)
    handlers = {}
    for ids in ("raw", "internal"):
        folder = root / f"repo-{ids}"
        write_repository(run, folder, k=20, ids=ids)
        version = folder / "shop" / "1"
        signature = Signature(**json.loads((version / "signature.json").read_text()))
        handlers[ids] = Handler(signature, torch.jit.load(str(version / "graph.pt")),
                                RawIds(signature, version) if signature.raw else None)
    out = {}
    for B, forms in requests.items():
        bytes_form = {c: np.array([v.encode() for v in a.reshape(-1)], dtype=object).reshape(a.shape)
                      if a.dtype == object else a for c, a in forms["raw"].items()}   # Triton hands over bytes
        sent = {"raw": bytes_form, "internal": forms["internal"]}
        timed = _time({ids: (lambda h=h, r=sent[ids]: h([r])) for ids, h in handlers.items()}, n)
        out.update({(ids, B): stats for ids, stats in timed.items()})
    return out


def _served(run: Path, requests: dict, n: int, ids: str) -> dict:
    import tritonclient.http as httpclient
    from specc.serve_workspace import free_port
    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.Popen([sys.executable, "-m", "specc.cli", "serve", str(run), "--port", str(port),
                             "--grpc-port", str(free_port("127.0.0.1")), "--metrics-port", str(free_port("127.0.0.1")),
                             "--ids", ids], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        deadline = time.time() + 300
        while not _ready(client):
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        out = {}
        for B, forms in requests.items():
            inputs = []
            for column, a in forms[ids].items():
                inputs.append(httpclient.InferInput(column, list(a.shape), "BYTES" if a.dtype == object else "INT64"))
                inputs[-1].set_data_from_numpy(a, binary_data=True)
            out[(ids, B)] = _time({ids: lambda: client.infer("shop", inputs)}, n)[ids]
        return out
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _ready(client) -> bool:
    try:
        return client.is_server_ready() and client.is_model_ready("shop")
    except Exception:   # noqa: BLE001 - not listening yet
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=3000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = _prepared_run(root, args.items, args.sessions)
        requests = {B: _requests(run, root / "data" / "valid", B) for B in args.batch}
        rows = _in_process(run, requests, args.requests, root)
        served = {**_served(run, requests, args.requests, "raw"), **_served(run, requests, args.requests, "internal")}
    print(f"{args.items} items, {args.sessions} sessions of 5-30 items; {args.requests} requests each; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    for B in args.batch:
        for ids in ("internal", "raw"):
            (p50, p99), (s50, s99) = rows[(ids, B)], served[(ids, B)]
            print(f"batch {B:>3}  --ids {ids:<8}  handler p50 {p50:6.2f} ms p99 {p99:6.2f}   "
                  f"server HTTP p50 {s50:6.2f} ms p99 {s99:6.2f}")


if __name__ == "__main__":
    main()
