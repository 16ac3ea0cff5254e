#!/usr/bin/env python
"""Baseline: NVIDIA Transformers4Rec 23.12 on MovieLens 100K (XLNet, causal next-item).

Run with the T4Rec virtual environment made by benchmarks/t4rec_setup.sh, not specc's:

    python examples/ml100k/prepare.py                          # -> examples/ml100k/data/
    bash benchmarks/t4rec_setup.sh                              # -> /tmp/t4rec-venv
    /tmp/t4rec-venv/bin/python benchmarks/t4rec_ml100k.py [--data examples/ml100k/data] [--epochs 10]

Model (what examples/ml100k/xlnet_causal.json says in specc): item_id-list only, embedding 64,
XLNet d_model 64, 4 heads, 2 layers, attn_type "uni" (causal), max_sequence_length 50, weight
tying, cross-entropy over the full catalog; batch 128, Adam lr 1e-3 (constant), 10 epochs.
Trained with a plain loop over T4Rec's model (``model(x, training=True)["loss"]``), evaluated as
T4Rec's Trainer does: ``model(x, testing=True)`` (causal masking, eval_on_last_item_seq_only:
predict each user's last item from the ones before it) and T4Rec's own NDCGAt / RecallAt
metrics over the full-catalog scores. Prints one JSON line.

Sequences longer than 50 are cut to their 50 most recent items before loading (what NVTabular's
``ListSlice(-50)`` does in T4Rec's examples): T4Rec's loader pads/trims to max_sequence_length
by keeping the *first* items, which would drop the evaluation target.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "examples", "ml100k", "data")


def patch_xlnet_create_mask() -> None:
    """transformers 4.30.2: ``XLNetModel.create_mask`` (used only when attn_type == "uni") calls
    ``torch.ones(qlen, qlen + mlen, self.device)``, passing the device as a third *size*
    argument, which raises ``TypeError: ones(): argument 'size' ... must be tuple of ints, but
    found element of type device``. The causal (uni) XLNet cannot run at all without this fix;
    the mask itself (1.0 = masked, upper triangle beyond the memory) is kept as it was."""
    from transformers.models.xlnet import modeling_xlnet

    def create_mask(self, qlen, mlen):
        mask = torch.ones((qlen, qlen + mlen), device=self.device)
        if self.same_length:
            mask_lo = mask[:, :qlen].tril(-1)
            mask.triu_(mlen + 1)
            mask[:, :qlen] += mask_lo
        else:
            mask.triu_(mlen + 1)
        return mask

    modeling_xlnet.XLNetModel.create_mask = create_mask


def truncate_to_recent(src: str, dst: str, columns: list[str], max_len: int) -> int:
    """Copies the parquet file keeping each list column's last max_len values (ListSlice(-max_len))."""
    table = pq.read_table(src, columns=columns)
    arrays = []
    for name in columns:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type):
            values = [None if v is None else v[-max_len:] for v in col.to_pylist()]
            col = pa.array(values, type=col.type)
        arrays.append(col)
    pq.write_table(pa.Table.from_arrays(arrays, names=columns), dst)
    return table.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder written by examples/ml100k/prepare.py")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="XLNet dropout (T4Rec's XLNetConfig.build default is 0.3; specc's body default 0.1)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)

    patch_xlnet_create_mask()
    import transformers4rec.torch as tr
    from transformers4rec.torch.ranking_metric import NDCGAt, RecallAt
    from transformers4rec.torch.utils.data_utils import MerlinDataLoader
    from merlin.schema.io.tensorflow_metadata import TensorflowMetadata

    data = os.path.abspath(args.data)
    schema = TensorflowMetadata.from_proto_text_file(data).to_merlin_schema()
    schema = schema.select_by_name(["item_id-list"])

    tmp = tempfile.mkdtemp(prefix="t4rec-ml100k-")
    n_train = truncate_to_recent(os.path.join(data, "train.parquet"), os.path.join(tmp, "train.parquet"),
                                 ["item_id-list"], args.max_len)
    truncate_to_recent(os.path.join(data, "valid.parquet"), os.path.join(tmp, "valid.parquet"),
                       ["item_id-list"], args.max_len)

    # ---- the model, as in T4Rec's examples ---------------------------------------------------
    input_module = tr.TabularSequenceFeatures.from_schema(
        schema, max_sequence_length=args.max_len, aggregation="concat", masking="causal",
        embedding_dim_default=args.d_model)
    config = tr.XLNetConfig.build(d_model=args.d_model, n_head=4, n_layer=2,
                                  total_seq_length=args.max_len, attn_type="uni", dropout=args.dropout)
    body = tr.SequentialBlock(input_module, tr.TransformerBlock(config, masking=input_module.masking))
    ks = [10, 20]
    metrics = [NDCGAt(top_ks=ks, labels_onehot=True), RecallAt(top_ks=ks, labels_onehot=True)]
    head = tr.Head(body, tr.NextItemPredictionTask(weight_tying=True, metrics=metrics), inputs=input_module)
    model = tr.Model(head)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    def loader(path: str, shuffle: bool):
        return MerlinDataLoader.from_schema(schema, path, batch_size=args.batch_size,
                                            max_sequence_length=args.max_len, shuffle=shuffle, drop_last=False)

    train_loader = loader(os.path.join(tmp, "train.parquet"), shuffle=True)
    valid_loader = loader(os.path.join(tmp, "valid.parquet"), shuffle=False)

    # ---- train ---------------------------------------------------------------------------------
    sessions = 0
    losses, epoch_s = [], []
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    for epoch in range(args.epochs):
        model.train()
        epoch_loss, steps, te = 0.0, 0, time.perf_counter()
        for x, y in train_loader:
            out = model(x, targets=y, training=True)
            loss = out["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += float(loss)
            steps += 1
            sessions += int(x["item_id-list"].shape[0])
        losses.append(epoch_loss / max(steps, 1))
        epoch_s.append(time.perf_counter() - te)
        print(f"epoch {epoch + 1}/{args.epochs} loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - t0
    train_cpu_s = time.process_time() - c0
    load_after = os.getloadavg()[0]

    # ---- evaluate: T4Rec's eval (testing=True, last item of each sequence) --------------------
    model.eval()
    for metric in metrics:
        metric.reset()
    t1 = time.perf_counter()
    n_eval = 0
    with torch.no_grad():
        for x, y in valid_loader:
            out = model(x, targets=y, testing=True)
            for metric in metrics:
                metric.update(out["predictions"], out["labels"])
            n_eval += int(out["labels"].shape[0])
    eval_s = time.perf_counter() - t1
    ndcg = metrics[0].compute()
    recall = metrics[1].compute()

    result = {
        "framework": "transformers4rec==23.12.0",
        "model": "xlnet-causal d64 h4 l2 len50 tied CE",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "dropout": args.dropout,
        "train_sessions": n_train,
        "eval_sessions": n_eval,
        "ndcg@10": round(float(ndcg[0]), 5),
        "recall@10": round(float(recall[0]), 5),
        "ndcg@20": round(float(ndcg[1]), 5),
        "recall@20": round(float(recall[1]), 5),
        "final_train_loss": round(losses[-1], 4) if losses else None,
        "train_wall_s": round(train_s, 2),
        "sessions_per_s": round(sessions / train_s, 1) if train_s > 0 else None,
        "train_cpu_s": round(train_cpu_s, 2),
        # the fastest epoch: the least disturbed by other processes on a shared machine
        "best_epoch_sessions_per_s": round(n_train / min(epoch_s), 1) if epoch_s else None,
        "eval_wall_s": round(eval_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
        # 1-minute load average before/after training: other processes on the machine slow
        # the wall-clock numbers down; compare timings only from runs on a quiet machine
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)],
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
