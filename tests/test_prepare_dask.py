"""The Dask engine on a 2-worker local cluster gives the same files as the local engine."""
from __future__ import annotations

import polars as pl
import pytest

from specc.prepare import prepare
from test_prepare import NON_FINITE_LOG, read, write_log

distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.mark.parametrize("split", ["time", "last"])
def test_two_workers_match_the_local_engine(tmp_path, client, split):
    log = write_log(tmp_path / "log.parquet")
    items = tmp_path / "items.parquet"
    pl.DataFrame({"item": ["a", "b"], "brand": ["p", "q"], "weight": [0.5, 1.5]}).write_parquet(items)
    spec = {"events": log, "item": "item", "time": "ts", "user": "session", "categorical": ["category"],
            "continuous": ["price"], "split": split, "valid_fraction": 0.25, "derive": ["time_since_prev", "timestamp"],
            "item_features": str(items)}
    local = prepare({**spec, "out": str(tmp_path / "local")})
    dask = prepare({**spec, "out": str(tmp_path / "dask")}, engine="dask", client=client)
    assert dask["engine"] == "dask" and dask["splits"] == local["splits"]
    for name in local["splits"]:
        a = pl.read_parquet(tmp_path / "local" / name / "*.parquet").sort("session")
        b = pl.read_parquet(tmp_path / "dask" / name / "*.parquet").sort("session")
        assert a.equals(b), name
        assert {"brand-list", "weight-list", "ts-list"} <= set(a.columns)
    assert (tmp_path / "dask" / "schema.pbtxt").read_text() == (tmp_path / "local" / "schema.pbtxt").read_text()


def test_cli_engine_dask(tmp_path, capsys):
    from specc.cli import main
    log = write_log(tmp_path / "log.parquet")
    code = main(["data", "prepare", log, "--out", str(tmp_path / "out"), "--item", "item", "--time", "ts",
                 "--session", "session", "--valid-fraction", "0.25", "--engine", "dask", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert '"engine": "dask"' in (tmp_path / "out" / "report.json").read_text()


def test_non_finite_continuous_values_become_zero_on_the_workers(tmp_path, client):
    out = str(tmp_path / "out")
    report = prepare({"events": write_log(tmp_path / "log.parquet", NON_FINITE_LOG), "out": out, "item": "item",
                      "time": "ts", "session": "session", "continuous": ["price"], "valid_fraction": 0.5},
                     engine="dask", client=client)
    assert read(out, "train")["price-list"].to_list() == [[0.0, 0.0, 0.0]]
    assert read(out, "valid")["price-list"].to_list() == [[0.0, 0.0, 2.5]]
    assert report["n_null_continuous"] == {"price": 5}
