"""specc.Model: the compiled nn.Module. Built only from a Plan (see builder.py)."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from specc.errors import DataError
from specc.nn.heads import NextItemHead, ScalarHead
from specc.nn.masking import causal_targets, mlm_positions, plm_positions
from specc.plan import RTD_LOSS_NAME, Plan
from specc.sampled_eval import ranks_as_top_ids, sampled_negatives


class Model(nn.Module):
    def __init__(self, plan: Plan, inputs: nn.Module, body: nn.Module, next_item: NextItemHead | None,
                 scalar_heads: dict[str, ScalarHead], mask_embedding: nn.Parameter | None,
                 discriminator: nn.Linear | None):
        super().__init__()
        self.plan = plan
        self.inputs, self.body, self.next_item = inputs, body, next_item
        self.scalar_heads = nn.ModuleDict(scalar_heads)
        self.mask_embedding = mask_embedding
        self.discriminator = discriminator
        i = plan.inputs
        self.max_length = i.max_sequence_length
        self.sequence_column = i.sequence_column
        self.list_columns = [f.column for f in i.features if f.sequential]
        self.time_column = plan.body.time_column   # read by the body (hstu's time bias), not an input feature
        if self.time_column is not None and self.time_column not in self.list_columns:
            self.list_columns.append(self.time_column)
        self.scalar_columns = [f.column for f in i.features if not f.sequential]
        self.id_ranges = {f.column: f.cardinality for f in i.features if f.role == "categorical"}
        task = plan.next_item
        self.item_table = None if task is None or task.table is None else \
            [t.name for t in i.tables].index(task.table)
        self.task_plans = {t.name: t for t in plan.tasks}
        self.generator: torch.Generator | None = None   # set by the trainer for reproducible masking/sampling

    # ------------------------------------------------------------------ batches

    @property
    def input_columns(self) -> list[str]:
        return self.list_columns + self.scalar_columns

    @property
    def target_columns(self) -> list[str]:
        return [t.target for t in self.plan.tasks if t.kind != "next_item"]

    def random_batch(self, batch_size: int = 8, length: int | None = None, min_length: int = 1, seed: int = 0,
                     targets: bool = False) -> dict[str, torch.Tensor]:
        """A random right-padded batch of this model's columns (for tests, benchmarks and warm-up); the first
        row is full length."""
        g = torch.Generator().manual_seed(seed)
        L = length or self.max_length
        lengths = torch.randint(min(min_length, L), L + 1, (batch_size,), generator=g)
        lengths[0] = L
        valid = torch.arange(L)[None] < lengths[:, None]
        batch = {}
        for c in self.input_columns:
            shape = (batch_size, L) if c in self.list_columns else (batch_size,)
            v = torch.randint(1, self.id_ranges[c], shape, generator=g) if c in self.id_ranges else \
                torch.rand(shape, generator=g)
            batch[c] = v * valid if c in self.list_columns else v
        if targets:
            for t in self.plan.tasks:
                if t.kind == "binary_classification":
                    batch[t.target] = torch.randint(0, 2, (batch_size,), generator=g)
                elif t.kind == "regression":
                    batch[t.target] = torch.rand(batch_size, generator=g)
        return batch

    def _backend(self, x: torch.Tensor) -> str:
        k = self.plan.kernels
        return k if k != "auto" else ("triton" if x.is_cuda else "torch")

    def prepare(self, batch: dict[str, torch.Tensor], targets: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Padded [B, L] list columns (most recent max_sequence_length items kept), [B] scalars, and lengths."""
        return self._window(*self._rows(batch, targets))

    def _rows(self, batch: dict[str, torch.Tensor], targets: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The batch's columns as given, whole rows checked (right-padded [B, W] lists, [B] scalars), and the
        rows' lengths."""
        needed = self.input_columns + (self.target_columns if targets else [])
        missing = [c for c in needed if c not in batch and f"{c}__values" not in batch]
        if missing:
            raise DataError([f"the batch lacks column(s) {', '.join(missing)}"], "batch")
        _require_tensors(batch, needed)
        out = {}
        for c in needed:
            out[c] = _padded(batch, c) if c in self.list_columns else _scalar(batch, c)
        _check_aligned(batch, out, self.sequence_column, [c for c in needed if c in self.list_columns],
                       [c for c in needed if c not in self.list_columns])
        for c in self.id_ranges:
            if out[c].is_floating_point() or out[c].is_complex() or out[c].dtype == torch.bool:
                raise DataError([f"column {c!r} holds {out[c].dtype} values; categorical ids must be integers"],
                                "batch")
            out[c] = out[c].long()   # int32/int16/uint8 ids are fine; the model indexes with int64
        seq = out[self.sequence_column]
        real = seq != 0
        if seq.shape[1] > 1 and (real[:, 1:] & ~real[:, :-1]).any():
            raise DataError([f"column {self.sequence_column!r} is not right-padded: each row must hold its items "
                             "first, then zeros"], "batch")
        checked = [c for c in self.id_ranges if out[c].numel()]
        floats = [c for c in needed if out[c].is_floating_point() and out[c].numel()]
        if checked or floats:   # one device sync for all columns
            stats = [torch.stack([out[c].min(), out[c].max()]) for c in checked]
            stats += [torch.stack([torch.isfinite(out[c]).all().long()] * 2) for c in floats]
            values = torch.stack(stats).tolist()
            bad = [f"column {c!r} has ids outside [0, {self.id_ranges[c]}) (min {lo}, max {hi})"
                   for c, (lo, hi) in zip(checked, values) if lo < 0 or hi >= self.id_ranges[c]]
            bad += [f"column {c!r} has NaN or infinite values" for c, (ok, _) in zip(floats, values[len(checked):])
                    if not ok]
            if bad:
                raise DataError(bad, "batch")
        return out, real.sum(1)

    def _window(self, rows: dict[str, torch.Tensor], lengths: torch.Tensor
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """What the model reads of whole rows: each row's most recent max_sequence_length positions, as
        [B, max_sequence_length] list columns (scalars as they are), and the lengths of those."""
        out = dict(rows)
        for c in self.list_columns:
            out[c] = keep_most_recent(out[c], lengths, self.max_length)
        return out, lengths.clamp(max=self.max_length)

    # ------------------------------------------------------------------ forward

    def encode(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor, replace: torch.Tensor | None = None,
               attention: torch.Tensor | None = None, query: torch.Tensor | None = None) -> torch.Tensor:
        """Body outputs [B, L, width]; positions in `replace` get the mask embedding. With `query` ([B]
        positions): [B, width] at those positions, which transformer bodies compute alone in their last layer."""
        seq = batch[self.sequence_column]
        B, L = seq.shape
        x = self.inputs(batch, B, L, self._backend(seq))
        valid = torch.arange(L, device=x.device)[None] < lengths[:, None]
        if replace is not None:
            x = torch.where(replace[..., None], self.mask_embedding.to(x.dtype), x)
            valid = valid | replace
        times = {} if self.time_column is None else {"times": batch[self.time_column]}
        if query is None:
            return self.body(x, valid, attention, **times)
        if getattr(self.body, "takes_query", False):
            return self.body(x, valid, attention, query=query, **times)
        return self.body(x, valid, attention, **times)[torch.arange(B, device=x.device), query]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        """Training: {"loss", "losses": {task: loss}}. In eval mode the next-item loss follows the eval protocol
        (the last item predicted from the ones before it) and "predictions" holds the other tasks' outputs."""
        if not self.training:
            return self._eval_forward(*self._rows(batch, targets=True))
        batch, lengths = self.prepare(batch, targets=True)
        losses: dict[str, torch.Tensor] = {}
        m = self.plan.masking
        items = batch[self.sequence_column]
        L = items.shape[1]
        gen = self.generator
        replace = attention = None
        if m.kind in ("mlm", "rtd"):
            replace = mlm_positions(lengths, L, m.probability, gen)
        elif m.kind == "plm":
            replace, attention = plm_positions(lengths, L, m.probability, m.max_span_length, gen)
        hidden = self.encode(batch, lengths, replace, attention)
        if self.next_item is not None:
            name = next(t.name for t in self.plan.tasks if t.kind == "next_item")
            if m.kind == "causal":
                where, targets = causal_targets(items, lengths)
            else:
                where, targets = replace, items
            h, y = hidden[where], targets[where]
            weight = self._item_weight()
            losses[name] = self.next_item.loss(h, weight, y, self._backend(h), gen)
            if m.kind == "rtd":
                losses[RTD_LOSS_NAME] = self._discriminator_loss(batch, lengths, replace, h, weight)
        for name, head in self.scalar_heads.items():
            losses[name] = head.loss(head(hidden, lengths), self._scalar_target(batch, name))
        total = sum(self._weight(name) * loss for name, loss in losses.items())
        return {"loss": total, "losses": losses}

    def _weight(self, name: str) -> float:
        if name == RTD_LOSS_NAME:
            return self.plan.masking.discriminator_weight
        return self.task_plans[name].weight

    def _item_weight(self) -> torch.Tensor:
        """The catalog's rows: a tied table shared with a larger column has rows beyond the catalog."""
        if self.item_table is None:
            return self.next_item.table
        return self.inputs.tables[self.item_table][:self.plan.next_item.n_items]

    def _scalar_target(self, batch, name) -> torch.Tensor:
        return batch[self.task_plans[name].target]

    def _discriminator_loss(self, batch, lengths, replaced_at, h_masked, weight) -> torch.Tensor:
        """ELECTRA-style replaced-token detection: corrupt masked items with samples, detect them per position."""
        items = batch[self.sequence_column]
        with torch.no_grad():
            if self.plan.masking.sample_from_batch:
                pool = items[items > 0]
                idx = torch.randint(0, pool.numel(), (h_masked.shape[0],), generator=self.generator).to(pool.device)
                fakes = pool[idx]
            else:
                logits = self.next_item.queries(h_masked.detach()) @ weight.detach().T / self.next_item.temperature
                logits[:, 0] = float("-inf")
                probs = torch.softmax(logits.float(), -1)
                gen = self.generator if probs.device.type == "cpu" else None
                fakes = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        corrupted = dict(batch)
        new_items = items.clone()
        new_items[replaced_at] = fakes
        corrupted[self.sequence_column] = new_items
        hidden = self.encode(corrupted, lengths)
        valid = torch.arange(items.shape[1], device=items.device)[None] < lengths[:, None]
        labels = (new_items != items).float()
        logits = self.discriminator(hidden).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits[valid], labels[valid])

    # ------------------------------------------------------------------ inference

    def next_hidden(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        """The body's state for the position after each sequence's last item, [B, width]. Never sees beyond it."""
        L = batch[self.sequence_column].shape[1]
        if not self.plan.masking.uses_mask_token:
            return self.encode(batch, lengths, query=(lengths - 1).clamp(min=0))
        # no room for the mask token: drop the oldest item. Branch-free, so the export traces this very code.
        full = lengths >= L
        batch = dict(batch)
        for c in self.list_columns:
            batch[c] = torch.where(full[:, None], F.pad(batch[c][:, 1:], (0, 1)), batch[c])
        lengths = lengths - full.long()
        replace = torch.arange(L, device=lengths.device)[None] == lengths[:, None]
        return self.encode(batch, lengths, replace, query=lengths)

    def _strip_last(self, batch, lengths):
        """Every sequence without its last item, and that item as the target."""
        rows = torch.arange(lengths.shape[0], device=lengths.device)
        last = (lengths - 1).clamp(min=0)
        target = batch[self.sequence_column][rows, last]
        stripped = dict(batch)
        for c in self.list_columns:
            v = batch[c].clone()
            v[rows, last] = 0
            stripped[c] = v
        return stripped, (lengths - 1).clamp(min=0), target

    def _held_out(self, rows, lengths):
        """The eval protocol's input from whole rows: each row's last item as the target and the window before it
        as the context, the very one `recommend` reads for the row without that item. -> (context batch, context
        lengths, target [B], history [B, W]: every item of the row before the target)."""
        stripped, short, target = self._strip_last(rows, lengths)
        context, short = self._window(stripped, short)
        return context, short, target, stripped[self.sequence_column]

    def _eval_forward(self, rows, lengths) -> dict:
        losses, predictions = {}, {}
        if self.next_item is not None:
            context, short, target, _ = self._held_out(rows, lengths)
            h = self.next_hidden(context, short)
            name = next(t.name for t in self.plan.tasks if t.kind == "next_item")
            losses[name] = self.next_item.full_catalog_loss(h, self._item_weight(), target, self._backend(h))
        if self.scalar_heads:
            batch, lengths = self._window(rows, lengths)
            hidden = self.encode(batch, lengths)
            for name, head in self.scalar_heads.items():
                out = head(hidden, lengths)
                losses[name] = head.loss(out, self._scalar_target(batch, name))
                predictions[name] = head.predict(out)
        total = sum(self._weight(n) * v for n, v in losses.items())
        return {"loss": total, "losses": losses, "predictions": predictions}

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int = 20, exclude_seen: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k next items after each sequence's last item: (scores [B, k], ids [B, k]). Never returns id 0.
        The model reads each row's last max_sequence_length items; `exclude_seen` excludes every item the batch
        holds for the row, older ones included."""
        if self.next_item is None:
            raise ValueError("this model has no next_item task")
        catalog = self.plan.next_item.n_items - 1
        if not 1 <= k <= catalog:
            raise ValueError(f"k must be between 1 and the catalog's {catalog} items (id 0 is padding), got {k}")
        rows, lengths = self._rows(batch, targets=False)
        _require_items(lengths)
        seen = rows[self.sequence_column] if exclude_seen else None
        with _eval_mode(self):
            return self._topk(*self._window(rows, lengths), k, seen)

    @torch.no_grad()
    def evaluate_batch(self, batch: dict[str, torch.Tensor], k: int, exclude_seen: bool = False) -> dict:
        """The eval protocol for one batch, by task name: (top-k ids, last items) for the next-item task, each
        last item predicted from the max_sequence_length ones before it (`exclude_seen`: none of the row's earlier
        items ranked); (predictions, labels) for the other tasks."""
        rows, lengths = self._rows(batch, targets=True)
        with _eval_mode(self):
            return self._evaluate(rows, lengths, k, exclude_seen)

    @torch.no_grad()
    def score(self, batch: dict[str, torch.Tensor], item_ids: torch.Tensor) -> torch.Tensor:
        """The scores `recommend` ranks by, for given candidates only: `item_ids` [B, M] (or [M], the same for every
        row) of catalog items -> [B, M] for the position after each sequence's last item."""
        if self.next_item is None:
            raise ValueError("this model has no next_item task")
        item_ids = torch.as_tensor(item_ids)
        if item_ids.dtype.is_floating_point or item_ids.dtype == torch.bool or item_ids.dim() not in (1, 2):
            raise ValueError("item_ids must be integer ids, [M] or [B, M]")
        catalog = self.plan.next_item.n_items
        if item_ids.numel() and not (1 <= int(item_ids.min()) and int(item_ids.max()) < catalog):
            raise ValueError(f"item_ids must be catalog items, 1..{catalog - 1} (0 is padding)")
        batch, lengths = self.prepare(batch)
        _require_items(lengths)
        if item_ids.dim() == 2 and item_ids.shape[0] != lengths.shape[0]:
            raise ValueError(f"item_ids has {item_ids.shape[0]} rows, the batch {lengths.shape[0]}")
        with _eval_mode(self):
            return self._score(batch, lengths, item_ids.to(lengths.device))

    def _score(self, batch, lengths, item_ids):
        h = self.next_hidden(batch, lengths)
        ids = item_ids.expand(h.shape[0], -1) if item_ids.dim() == 1 else item_ids
        return self.next_item.score(h, self._item_weight(), ids)

    def _evaluate(self, rows, lengths, k, exclude_seen) -> dict:
        out: dict = {}
        if self.next_item is not None:
            context, short, target, history = self._held_out(rows, lengths)
            sampled = self.plan.next_item.sampled
            if sampled:
                negatives = sampled_negatives(history, target, self.plan.next_item.n_items, sampled["negatives"],
                                              sampled["seed"])
                scores = self._score(context, short, torch.cat([target[:, None], negatives], 1))
                top = ranks_as_top_ids(scores, target, k)
                if exclude_seen:   # a target the row saw before counts as a miss, as in the full protocol
                    top[(history == target[:, None]).any(1)] = -1
            else:   # a cut-off beyond a small catalog ranks it all: the missing places hold no item (-1)
                top = self._topk(context, short, min(k, self.plan.next_item.n_items - 1),
                                 history if exclude_seen else None)[1]
                top = F.pad(top, (0, k - top.shape[1]), value=-1)
            out[self.plan.next_item.name] = (top, target)
        if self.scalar_heads:
            batch, lengths = self._window(rows, lengths)
            hidden = self.encode(batch, lengths)
            for name, head in self.scalar_heads.items():
                out[name] = (head.predict(head(hidden, lengths)), self._scalar_target(batch, name))
        return out

    def _topk(self, batch, lengths, k, seen: torch.Tensor | None):
        """Top-k items for the position after each row of `batch`, none of those in `seen` [B, W] (0-padded)."""
        h = self.next_hidden(batch, lengths)
        # id 0 (padding) is always excluded (a full row of seen items holds no 0)
        exclude = torch.zeros_like(lengths[:, None]) if seen is None else F.pad(seen, (0, 1))
        return self.next_item.topk(h, self._item_weight(), k, exclude, self._backend(h))


def keep_most_recent(x: torch.Tensor, lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """Right-padded [B, L] -> [B, max_length]: each row's last `max_length` real values, right-padded with 0.
    Branch-free (works for any L), so the exported graph shares it."""
    idx = (lengths - max_length).clamp(min=0)[:, None] + torch.arange(max_length, device=x.device)[None]
    return F.pad(x, (0, max_length)).gather(1, idx) * (idx < lengths[:, None]).to(x.dtype)


@contextmanager
def _eval_mode(model: nn.Module):
    """Inference runs without dropout even when the model is in training mode; the mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _scalar(batch: dict[str, torch.Tensor], column: str) -> torch.Tensor:
    """A scalar column as [B]: given as [B], [B, 1] (Merlin's loader, Triton clients) or ragged with one value
    per row."""
    if column not in batch:
        values, offsets = batch[f"{column}__values"], batch[f"{column}__offsets"]
        if values.dim() != 1 or offsets.shape != (values.shape[0] + 1,) or \
                not torch.equal(offsets.long(), torch.arange(values.shape[0] + 1, device=offsets.device)):
            raise DataError([f"the model reads {column!r} as a scalar column: its ragged form needs exactly one "
                             "value per row"], "batch")
        return values
    v = batch[column]
    if v.dim() == 2 and v.shape[1] == 1:
        return v.reshape(v.shape[0])
    if v.dim() != 1:
        raise DataError([f"the model reads {column!r} as a scalar column (one value per row): expected [batch] or "
                         f"[batch, 1], got {list(v.shape)}"], "batch")
    return v


def _check_aligned(batch, out, sequence: str, lists: list[str], scalars: list[str]) -> None:
    """Every column describes the same rows, and list columns the same positions as the item column."""
    B, L = out[sequence].shape
    bad = [f"list column {c!r} has shape {list(out[c].shape)}, the item column {sequence!r} {[B, L]}"
           for c in lists if out[c].shape != (B, L)]
    bad += [f"column {c!r} has {out[c].shape[0]} rows, the item column {sequence!r} {B}"
            for c in scalars if out[c].shape[0] != B]
    offsets = {c: batch[f"{c}__offsets"] for c in lists if f"{c}__offsets" in batch}
    if sequence in offsets:
        bad += [f"ragged column {c!r} has other offsets than the item column {sequence!r}: each row needs one "
                "value per item" for c, o in offsets.items() if not torch.equal(o.long(), offsets[sequence].long())]
    if bad:
        raise DataError(bad, "batch")


def _require_tensors(batch: dict, columns: list[str]) -> None:
    """Every column the model reads is a torch tensor (ids, not raw values)."""
    bad = []
    for c in columns:
        for key in (c, f"{c}__values", f"{c}__offsets"):
            if key in batch and not isinstance(batch[key], torch.Tensor):
                kind = type(batch[key])
                bad.append(f"column {key!r} is a {kind.__module__}.{kind.__qualname__}; the model takes torch "
                           "tensors of ids (raw values map to ids with specc.mappings.Mapping.load(run_dir, column)"
                           ".encode(rows))")
    if bad:
        raise DataError(bad, "batch")


def _require_items(lengths: torch.Tensor) -> None:
    """Recommending and scoring start from a session's items: a row with none has nothing to go on."""
    empty = torch.nonzero(lengths == 0).flatten().tolist()
    if empty:
        rows = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        raise DataError([f"row(s) {rows} hold no items (all padding): a recommendation starts from at least one "
                         "item; leave such rows out"], "batch")


def _padded(batch: dict[str, torch.Tensor], column: str) -> torch.Tensor:
    """A list column as [B, L], right-padded; Merlin's ragged `col__values`/`col__offsets` are converted."""
    if column in batch:
        v = batch[column]
        if v.dim() != 2:
            raise DataError([f"list column {column!r} has shape {list(v.shape)}; list columns are [batch, length] "
                             "(one session of items a, b, c is [[a, b, c]]) or ragged "
                             f"({column}__values, {column}__offsets)"], "batch")
        return v
    values, offsets = batch[f"{column}__values"], batch[f"{column}__offsets"].long()
    lengths = offsets[1:] - offsets[:-1]
    if values.dim() != 1 or offsets.dim() != 1 or offsets.numel() < 2 or offsets[0] != 0 \
            or offsets[-1] != values.shape[0] or (lengths < 0).any():
        raise DataError([f"{column}__offsets must be [batch + 1], start at 0, never decrease and end at "
                         f"len({column}__values) = {values.shape[0] if values.dim() == 1 else '?'} (values "
                         f"{list(values.shape)}, offsets {offsets.tolist()[:8]}{' ...' if offsets.numel() > 8 else ''})"],
                        "batch")
    B, L = lengths.shape[0], int(lengths.max()) if lengths.numel() else 0
    pos = torch.arange(L, device=values.device)[None]
    idx = (offsets[:-1, None] + pos).clamp(max=max(values.shape[0] - 1, 0))
    out = values[idx] if values.numel() else torch.zeros(B, L, dtype=values.dtype, device=values.device)
    return out * (pos < lengths[:, None]).to(values.dtype)
