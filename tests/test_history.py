"""Rows longer than max_sequence_length: `exclude_seen` reads the whole history, and evaluate and recommend read
the same context (the max_sequence_length items before the predicted position), through the data layer too."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import specc
from specc.evaluation import evaluate, open_evaluation, open_for
from specc.sampled_eval import sampled_negatives

N_ITEMS = 41      # ids 1..40 (0 is padding)
WINDOW = 10
SCHEMA = specc.Schema.from_columns([
    {"name": "items", "tags": ["item_id", "categorical", "list"], "is_list": True, "cardinality": N_ITEMS},
    {"name": "cats", "tags": ["categorical", "list"], "is_list": True, "cardinality": 5},
])


def model_for(masking="causal", metrics=None):
    spec = {"specc": 1, "inputs": {"max_sequence_length": WINDOW, "embeddings": {"default_dim": 8}},
            "masking": {"kind": masking},
            "body": {"kind": "transformer", "architecture": "native", "d_model": 8, "n_head": 1, "n_layer": 1},
            "tasks": [{"kind": "next_item", "metrics": metrics or {"recall": [N_ITEMS - 1]}}]}
    torch.manual_seed(0)
    return specc.build(spec, SCHEMA).eval()


def rows():
    """Whole rows (history, then the held-out item): 30 distinct items then a fresh one; 30 then one of its
    oldest again (seen before the window); a short row."""
    g = torch.Generator().manual_seed(1)
    fresh = (torch.randperm(30, generator=g) + 1).tolist() + [35]
    again = (torch.randperm(30, generator=g) + 11).tolist()
    again.append(again[2])
    return [fresh, again, [4, 9, 2, 7, 5, 40]]


def write(path, sequences):
    pq.write_table(pa.table({"items": sequences, "cats": [[i % 5 for i in s] for s in sequences]}), path)
    return str(path)


def padded(sequences):
    width = max(map(len, sequences))
    items = torch.tensor([s + [0] * (width - len(s)) for s in sequences])
    return {"items": items, "cats": items % 5}


def only_batch(dataset):
    (batch,) = list(dataset.batches(64, shuffle=False))
    return batch


def ranked(ids):
    return [[i for i in row if i > 0] for row in ids.tolist()]


def test_a_30_item_row_never_gets_any_of_its_items_back(tmp_path):
    model = model_for()
    history = [r[:-1] for r in rows()]
    batch = only_batch(open_for(model, write(tmp_path / "h.parquet", history), SCHEMA, 1, with_targets=False,
                                whole_rows=True))
    assert batch["items"].shape[1] == 30   # whole rows, not the model's window of 10
    _, ids = model.recommend(batch, k=N_ITEMS - 1, exclude_seen=True)
    for got, seen in zip(ranked(ids), history):
        assert set(got) == set(range(1, N_ITEMS)) - set(seen)
    # the window alone would let the 20 older items back in
    _, windowed = model.recommend(padded([h[-WINDOW:] for h in history]), k=N_ITEMS - 1, exclude_seen=True)
    assert set(ranked(windowed)[0]) & set(history[0][:20])


def test_evaluation_excludes_the_whole_history_but_not_a_first_time_target(tmp_path):
    model = model_for()
    whole = rows()
    dataset = open_evaluation(model, write(tmp_path / "e.parquet", whole), SCHEMA, exclude_seen=True)
    top, target = model.evaluate_batch(only_batch(dataset), k=N_ITEMS - 1, exclude_seen=True)["next_item"]
    _, ids = model.recommend(padded([r[:-1] for r in whole]), k=N_ITEMS - 1, exclude_seen=True)
    assert ranked(top) == ranked(ids)
    assert target.tolist() == [r[-1] for r in whole]
    assert 35 in ranked(top)[0] and whole[1][-1] not in ranked(top)[1]   # the second one's target came before
    metrics = evaluate(model, open_evaluation(model, str(tmp_path / "e.parquet"), SCHEMA, exclude_seen=True),
                       exclude_seen=True)
    assert metrics["recall@40"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("masking", ["causal", "mlm"])
def test_evaluate_reads_the_context_recommend_reads_for_the_row_without_its_target(tmp_path, masking):
    model = model_for(masking)
    whole = rows()
    dataset = open_evaluation(model, write(tmp_path / "e.parquet", whole), SCHEMA)
    assert dataset.max_length == WINDOW + 1
    top, _ = model.evaluate_batch(only_batch(dataset), k=N_ITEMS - 1)["next_item"]
    history = only_batch(open_for(model, write(tmp_path / "h.parquet", [r[:-1] for r in whole]), SCHEMA, 1,
                                  with_targets=False))
    scores, ids = model.recommend(history, k=N_ITEMS - 1)
    assert ranked(top) == ranked(ids)
    # a context one item shorter scores otherwise, so the comparison above tells them apart (a mask token
    # takes a place of the window: the context of a row that fills it is WINDOW - 1 items then)
    read = WINDOW - (masking == "mlm")
    shorter, _ = model.recommend(padded([r[-read:-1] for r in whole]), k=N_ITEMS - 1)
    assert not torch.allclose(shorter[:2], scores[:2])


def test_the_eval_loss_reads_the_same_context(tmp_path):
    model = model_for()
    whole = rows()
    loss = model(only_batch(open_evaluation(model, write(tmp_path / "e.parquet", whole), SCHEMA)))["loss"]
    assert torch.allclose(loss, model(padded([r[-WINDOW - 1:] for r in whole]))["loss"])
    assert not torch.allclose(loss, model(padded([r[-WINDOW:] for r in whole]))["loss"])


def test_sampled_negatives_avoid_the_whole_history_whatever_the_padding(tmp_path):
    model = model_for(metrics={"recall": [5], "protocol": "sampled", "negatives": 9, "seed": 2})
    whole = rows()
    dataset = open_evaluation(model, write(tmp_path / "e.parquet", whole), SCHEMA)
    assert dataset.max_length is None
    history = padded([r[:-1] for r in whole])["items"]
    target = torch.tensor([r[-1] for r in whole])
    negatives = sampled_negatives(history, target, N_ITEMS, 9, seed=2)
    for row, drawn in zip(whole, negatives.tolist()):
        assert not set(drawn) & set(row)
    wider = torch.nn.functional.pad(history, (0, 7))
    assert torch.equal(sampled_negatives(wider, target, N_ITEMS, 9, seed=2), negatives)


def test_the_commands_read_whole_rows_for_exclude_seen(tmp_path, capsys):
    import json

    from specc.cli import main
    from specc.train import train
    spec = {"specc": 1, "inputs": {"max_sequence_length": WINDOW, "embeddings": {"default_dim": 8}},
            "masking": {"kind": "causal"},
            "body": {"kind": "transformer", "architecture": "native", "d_model": 8, "n_head": 1, "n_layer": 1},
            "tasks": [{"kind": "next_item", "metrics": {"recall": [N_ITEMS - 1]}}],
            "training": {"batch_size": 4, "epochs": 1}}
    whole = rows()
    train(spec, write(tmp_path / "t.parquet", whole * 4), str(tmp_path / "run"), schema=SCHEMA, progress=False,
          log=lambda message: None)
    history = write(tmp_path / "h.parquet", [r[:-1] for r in whole])
    assert main(["recommend", str(tmp_path / "run"), "--data", history, "--k", str(N_ITEMS - 1), "--exclude-seen",
                 "--out", str(tmp_path / "recs.jsonl")]) == 0
    for line, seen in zip((tmp_path / "recs.jsonl").read_text().splitlines(), [r[:-1] for r in whole]):
        assert set(json.loads(line)["item_ids"]) == set(range(1, N_ITEMS)) - set(seen)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--data", write(tmp_path / "e.parquet", whole),
                 "--exclude-seen"]) == 0
    # every unseen item is ranked: the first and last targets are hits, the second (seen before) is excluded
    assert json.loads(capsys.readouterr().out)["recall@40"] == pytest.approx(2 / 3)
