"""The input block: embedding lookups, continuous features, aggregation, normalisation and projection."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specc.nn.bodies import mlp


class SoftEmbedding(nn.Module):
    """Soft one-hot embedding of scalar values (Li et al., 2021): softmax(w·x + b) @ table, per feature."""

    def __init__(self, n_features: int, cardinality: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_features, cardinality) * 0.1)
        self.bias = nn.Parameter(torch.zeros(n_features, cardinality))
        self.table = nn.Parameter(torch.randn(n_features, cardinality, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # [B, L, n] -> [B, L, n * dim]
        probs = torch.softmax(x[..., None] * self.weight + self.bias, dim=-1)
        return torch.einsum("blnc,ncd->blnd", probs, self.table).flatten(2)


class PretrainedVectors(nn.Module):
    """Vectors per id, frozen (a buffer, saved with the weights) or fine-tuned, optionally projected by a Linear."""

    def __init__(self, vectors: torch.Tensor, trainable: bool, projection: int | None = None):
        super().__init__()
        if trainable:
            self.weight = nn.Parameter(vectors.clone())
        else:
            self.register_buffer("weight", vectors.clone())
        self.projection = nn.Linear(vectors.shape[1], projection) if projection else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:   # [...] -> [..., width]
        x = F.embedding(ids, self.weight, padding_idx=0)
        return self.projection(x) if self.projection is not None else x


class InputBlock(nn.Module):
    """Turns a padded batch into [B, L, output_width] interaction embeddings.

    tables:       (rows, dim) per embedding table
    sequential:   (column, table index) of categorical list features, in order
    context:      (column, table index) of scalar categorical features (broadcast along the sequence)
    continuous:   names of continuous features (list or scalar)
    pretrained:   (column, PretrainedVectors) of each pretrained part, in order; a list column's vectors are
                  per position, a scalar column's broadcast along the sequence
    """

    def __init__(self, tables: list[tuple[int, int]], sequential: list[tuple[str, int]],
                 context: list[tuple[str, int]], continuous: list[str], continuous_kind: str | None,
                 continuous_dim: int, soft_cardinality: int | None, aggregation: str, item_column: str | None,
                 aggregated_width: int, layer_norm: bool, dropout: float,
                 projection: tuple[int, list[int], str, float] | None,
                 pretrained: list[tuple[str, PretrainedVectors]] = ()):
        super().__init__()
        self.tables = nn.ParameterList(nn.Parameter(torch.randn(rows, dim) * 0.02) for rows, dim in tables)
        with torch.no_grad():
            for t in self.tables:
                t[0].zero_()   # id 0 is padding
        self.sequential, self.context, self.continuous = sequential, context, continuous
        self.pretrained_columns = [c for c, _ in pretrained]
        self.pretrained = nn.ModuleList(v for _, v in pretrained)
        self.aggregation, self.item_column = aggregation, item_column
        self.continuous_kind = continuous_kind
        self.cont = None
        if continuous and continuous_kind == "linear":
            self.cont = nn.Linear(len(continuous), continuous_dim)
        elif continuous and continuous_kind == "soft_embedding":
            self.cont = SoftEmbedding(len(continuous), soft_cardinality, continuous_dim)
        self.continuous_dim = continuous_dim if continuous_kind != "identity" else 1
        self.norm = nn.LayerNorm(aggregated_width) if layer_norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.projection = None
        if projection is not None:
            width, dims, activation, proj_dropout = projection
            self.projection = mlp([width, *dims], activation, proj_dropout, last_activation=activation != "none")

    def _gather(self, features: list[tuple[str, int]], batch: dict[str, torch.Tensor], combine: str, backend: str):
        from specc.kernels import gather_concat, gather_sum
        weights = [self.tables[t] for _, t in features]
        ids = [batch[c] for c, _ in features]
        fn = gather_concat if combine == "concat" else gather_sum
        return fn(weights, ids, padding_idx=0, backend=backend, validate=False)   # Model.prepare checked the ids

    def _continuous_parts(self, batch: dict[str, torch.Tensor], B: int, L: int) -> torch.Tensor | None:
        if not self.continuous:
            return None
        dtype = self.tables[0].dtype if len(self.tables) else torch.float32   # the model's (float32 unless cast)
        values = torch.stack([v if v.dim() == 2 else v[:, None].expand(B, L)
                              for v in (batch[c].to(dtype) for c in self.continuous)], dim=-1)
        return self.cont(values) if self.cont is not None else values

    def _pretrained_parts(self, batch: dict[str, torch.Tensor], B: int, L: int) -> list[torch.Tensor]:
        parts = [vectors(batch[c]) for c, vectors in zip(self.pretrained_columns, self.pretrained)]
        return [p if p.dim() == 3 else p[:, None].expand(B, L, -1) for p in parts]

    def forward(self, batch: dict[str, torch.Tensor], B: int, L: int, backend: str = "torch") -> torch.Tensor:
        """backend: "torch" or "triton" for the embedding gathers (the model picks it per device)."""
        cont = self._continuous_parts(batch, B, L)
        pretrained = self._pretrained_parts(batch, B, L)
        if self.aggregation == "concat":
            parts = []
            if self.sequential:
                parts.append(self._gather(self.sequential, batch, "concat", backend))
            if self.context:
                parts.append(self._gather(self.context, batch, "concat", backend)[:, None].expand(B, L, -1))
            parts += pretrained
            if cont is not None:
                parts.append(cont)
            x = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        else:
            others = [f for f in self.sequential if self.aggregation == "sum" or f[0] != self.item_column]
            total = self._gather(others, batch, "sum", backend) if others else 0
            if self.context:
                total = total + self._gather(self.context, batch, "sum", backend)[:, None]
            for part in pretrained:
                total = total + part
            if cont is not None:
                total = total + cont.view(B, L, -1, self.continuous_dim).sum(2)
            if self.aggregation == "item_multiply":
                item = next(f for f in self.sequential if f[0] == self.item_column)
                total = self._gather([item], batch, "concat", backend) * total
            x = total
        x = self.drop(self.norm(x))
        return self.projection(x) if self.projection is not None else x
