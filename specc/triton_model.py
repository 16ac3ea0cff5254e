"""The Triton Python-backend model of `specc serve`; it runs inside Triton's backend stub, never in specc.

Each model folder that `specc serve` writes holds `graph.pt` (the traced inference graph), `signature.json`
(see `specc.serve_handler.Signature`), the id mappings of its raw-id columns under `categories/`
(`specc.serve_ids`) and a one-line `model.py` that imports `TritonPythonModel` from here.
"""
from __future__ import annotations

import json
import os
import threading
import time

import triton_python_backend_utils as pb_utils

from specc.cpu import keep_freed_memory
from specc.serve_handler import BadRequest, Handler, Signature
from specc.serve_ids import RawIds


def _exit_with_tritonserver() -> None:
    """Triton's stub notices a dead tritonserver only once its model is loaded; this one also does while torch
    imports and the graph loads, so a server killed during start-up leaves no stub behind."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, name="specc-parent-watch", daemon=True).start()


_exit_with_tritonserver()


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import torch   # after the watch above starts: importing it is most of a stub's start-up
        folder = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(folder, "signature.json")) as f:
            signature = Signature(**json.load(f))
        torch.set_num_threads(signature.threads)
        torch.set_grad_enabled(False)
        keep_freed_memory()   # requests allocate the same tensors again and again: no unmap/page-fault cycle
        codec = RawIds(signature, folder) if signature.raw else None
        self.handler = Handler(signature, torch.jit.load(os.path.join(folder, "graph.pt")), codec)

    def execute(self, requests: list) -> list:
        arrays = []
        for request in requests:
            tensors = {name: pb_utils.get_input_tensor_by_name(request, name) for name in self.handler.specs}
            arrays.append({name: t.as_numpy() for name, t in tensors.items() if t is not None})
        return [_response(result) for result in self.handler(arrays)]


def _response(result) -> pb_utils.InferenceResponse:
    if isinstance(result, BadRequest):   # this request alone fails, with HTTP 400 / gRPC INVALID_ARGUMENT
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result), pb_utils.TritonError.INVALID_ARG))
    return pb_utils.InferenceResponse([pb_utils.Tensor(name, value) for name, value in result.items()])
