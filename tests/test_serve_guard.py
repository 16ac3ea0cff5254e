"""specc serve's request limits, restart policy and workspace clean-up, without a server (see test_serve.py)."""
import os
import re
import subprocess
import tempfile
from collections import deque
from pathlib import Path

import pytest

pytest.importorskip("grpc")
pytest.importorskip("aiohttp")
from specc.serve_limits import Rejected, ServedModel, check_inputs, check_request, http_inputs  # noqa: E402
from specc.serve_supervisor import RestartPolicy  # noqa: E402
from specc.serve_workspace import make_workspace  # noqa: E402

MB = 1 << 20


@pytest.mark.parametrize("shape, problem", [
    ([2, 1099511627776], "larger than the limit of 1048576 bytes"),
    ([2147483648, 2147483648], "larger than the limit"),     # 2**65 bytes: 0 in 64-bit arithmetic
    ([2, 2 ** 61], "larger than the limit"),
    ([2, -1], "non-negative integers"),
    ([2, 1.5], "non-negative integers"),
    ([2, True], "non-negative integers"),
    ("2, 3", "non-negative integers"),
])
def test_declared_shapes_are_bounded_in_exact_arithmetic(shape, problem):
    with pytest.raises(Rejected, match=problem):
        check_inputs([("item_id-list", "INT64", shape, None)], MB)


def test_the_whole_request_is_bounded_and_json_values_match_the_shape():
    half = [("a", "FP32", [MB // 8], None), ("b", "INT64", [MB // 16], None)]
    check_inputs(half, MB)
    with pytest.raises(Rejected, match="input 'c' .* larger than the limit"):
        check_inputs(half + [("c", "INT64", [MB // 16 + 1], None)], MB)
    with pytest.raises(Rejected, match="datatype 'FOO'"):
        check_inputs([("a", "FOO", [1], None)], MB)
    check_inputs([("a", "INT64", [2, 2], [[1, 2], [3, 4]])], MB)
    with pytest.raises(Rejected, match="has 3 values, its shape \\[2, 2\\] needs 4"):
        check_inputs([("a", "INT64", [2, 2], [1, 2, 3])], MB)


@pytest.mark.parametrize("datatype, values, problem", [
    ("INT64", [1, 2.5], "holds 2.5; its values must be integers in \\[-9223372036854775808, 9223372036854775807\\]"),
    ("INT64", [1, 2 ** 63], "holds 9223372036854775808"),
    ("INT32", [1, -(2 ** 31) - 1], "integers in \\[-2147483648, 2147483647\\]"),
    ("UINT8", [1, -1], "integers in \\[0, 255\\]"),
    ("INT64", [1, True], "holds true"),
    ("INT64", [1, "2"], 'holds "2"'),
    ("FP32", [1, None], "holds null; its values must be numbers"),
    ("BOOL", [True, 1], "must be true or false"),
])
def test_json_values_are_of_the_datatypes_kind_and_range(datatype, values, problem):
    with pytest.raises(Rejected, match=problem):
        check_inputs([("a", datatype, [2], values)], MB)
    check_inputs([("a", datatype, [2], values[:1] * 2)], MB)


def test_http_inputs_reads_the_json_header_of_binary_requests():
    header = b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}]}'
    assert http_inputs(header + b"\0" * 16, str(len(header))) == [("x", "INT64", [2], None)]
    with pytest.raises(Rejected, match="does not fit"):
        http_inputs(header, str(len(header) + 1))
    with pytest.raises(Rejected, match="not valid JSON"):
        http_inputs(b"[" * 100000, None)
    with pytest.raises(Rejected, match='needs "inputs"'):
        http_inputs(b'{"inputs": 3}', None)


SHOP = {"shop": ServedModel(("item_id-list", "brand-list"), batched=True),
        "shop_ragged": ServedModel(("item_id-list__values", "item_id-list__offsets"), batched=False)}


def _shop_inputs(shape, extra=()):
    return [("item_id-list", "BYTES", shape, None), ("brand-list", "INT64", shape, None), *extra]


@pytest.mark.parametrize("inputs, problem", [
    (_shop_inputs([2, 3], [("foo", "INT64", [2, 3], None)]),
     "input 'foo' is not an input of model 'shop' (its inputs: item_id-list, brand-list)"),
    (_shop_inputs([2, 3])[:1], "model 'shop' needs input(s) brand-list (its inputs: item_id-list, brand-list)"),
    (_shop_inputs([0, 3]), "input 'item_id-list' has shape [0, 3]: inputs must have at least one row "
                           "(batch dimension 0)"),
])
def test_inputs_must_be_the_models_own_with_at_least_one_row(inputs, problem):
    with pytest.raises(Rejected, match=re.escape(problem)):
        check_request("shop", inputs, MB, SHOP)
    check_request("shop", _shop_inputs([2, 3]), MB, SHOP)


def test_ragged_shapes_are_left_to_the_model_and_unknown_models_to_tritonserver():
    check_request("shop_ragged", [("item_id-list__values", "BYTES", [0], None),
                                  ("item_id-list__offsets", "INT64", [1], None)], MB, SHOP)
    check_request("other", [("foo", "INT64", [0, 3], None)], MB, SHOP)
    with pytest.raises(Rejected, match="larger than the limit"):   # the size bounds hold for every model
        check_request("other", [("foo", "INT64", [2, 2 ** 61], None)], MB, SHOP)


def test_restart_policy_counts_crashes_within_its_window():
    policy, crashes = RestartPolicy(max_restarts=2, window=60), deque()
    assert [policy.count(crashes, t) for t in (0, 10, 50, 65, 200)] == [1, 2, 3, 3, 1]


def test_workspace_of_a_dead_server_is_removed_and_a_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    started = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    stale, reused, live, other = (tmp_path / f"specc-serve-{dead.pid}.1-a", tmp_path / f"specc-serve-{os.getpid()}.1-b",
                                  tmp_path / f"specc-serve-{os.getpid()}.{started}-c", tmp_path / "specc-serve-xyz")
    for folder in (stale, reused, live, other):
        (folder / "models").mkdir(parents=True)
    own = make_workspace()
    assert not stale.exists() and not reused.exists()    # a pid that is gone, or now another process's
    assert live.exists() and other.exists()              # a live server's, and one that names no owner
    assert own.parent == tmp_path and own.name.startswith(f"specc-serve-{os.getpid()}.{started}-")
