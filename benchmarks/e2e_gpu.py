"""End-to-end GPU training throughput of a compiled SASRec-like spec (issue targets: >= 100k sessions/s at 100k
items and >= 30k at 1M items on an H100, and it runs at 10M items).

Runs from the repository root with no install and no merlin: `python benchmarks/e2e_gpu.py [--items 100000 ...]`.
Random sessions (batch 512, length 20), causal transformer (d_model 64, 4 heads, 2 layers; specc's native body
and its XLNet, the brief's reference model: eager XLNet 27 ms per step at 100k items on an H100, out of memory at
1M), full-catalog cross-entropy, bf16 autocast, AdamW. Prints sessions/s and ms per step (median of timed steps)
and peak memory per catalog size, for specc's Triton kernels and for the same compiled model on the torch path.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import specc  # noqa: E402

BATCH, LENGTH = 512, 20


def spec_for(n_items: int, architecture: str) -> tuple[dict, specc.Schema]:
    schema = specc.Schema.from_columns([{"name": "item_id-list", "tags": ["item_id", "categorical", "list"],
                                         "is_list": True, "cardinality": n_items}])
    spec = {"specc": 1, "name": f"sasrec-{n_items}",
            "inputs": {"max_sequence_length": LENGTH, "embeddings": {"default_dim": 64}},
            "masking": {"kind": "causal"},
            "body": {"kind": "transformer", "architecture": architecture, "d_model": 64, "n_head": 4, "n_layer": 2,
                     "dropout": 0.1},
            "tasks": [{"kind": "next_item", "loss": {"kind": "cross_entropy"}}],
            "training": {"precision": "bf16"}}
    return spec, schema


def run(n_items: int, architecture: str, kernels: str, steps: int, warmup: int, device: str = "cuda"
        ) -> tuple[float, float]:
    spec, schema = spec_for(n_items, architecture)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = specc.build(spec, schema, kernels=kernels).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [{c: v.to(device) for c, v in model.random_batch(BATCH, min_length=2, seed=s).items()}
               for s in range(4)]
    times = []
    for i in range(warmup + steps):
        batch = batches[i % len(batches)]
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return BATCH / times[len(times) // 2], torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--architectures", nargs="+", default=["native", "xlnet"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: a smoke test of this script on the torch path")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("needs a CUDA device (or --device cpu for a smoke test)")
        return 0
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"# {name}, torch {torch.__version__}, batch {BATCH}, length {LENGTH}")
    print(f"{'body':>7}  {'items':>10}  {'kernels':>7}  {'sessions/s':>11}  {'ms/step':>8}  {'peak GB':>8}")
    for architecture in args.architectures:
        for n in args.items:
            for kernels in ("triton", "torch") if args.device == "cuda" else ("torch",):
                try:
                    rate, peak = run(n, architecture, kernels, args.steps, args.warmup, args.device)
                    print(f"{architecture:>7}  {n:>10}  {kernels:>7}  {rate:>11,.0f}  {BATCH / rate * 1e3:>8.2f}  "
                          f"{peak:>8.2f}", flush=True)
                except torch.cuda.OutOfMemoryError:
                    print(f"{architecture:>7}  {n:>10}  {kernels:>7}  {'OOM':>11}", flush=True)
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
