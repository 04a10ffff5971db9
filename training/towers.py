"""Consumer and producer towers built from the schema (no per-feature code), and the
two-tower model that holds them, the shared id tables and the learned temperature."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from followrec.core.errors import InputError


class Tower(nn.Module):
    """Embeds each feature by kind, concatenates, and maps through an MLP to a unit vector.

    categorical -> embedding; id_bag -> mean-pooled rows of a shared id table;
    dense -> linear projection of the standardised value; vector -> linear projection.
    """

    def __init__(
        self,
        features: list[dict[str, Any]],
        id_tables: nn.ModuleDict,
        dim: int,
        hidden: tuple[int, ...],
        output_dim: int,
        sparse_ids: bool = False,
    ) -> None:
        super().__init__()
        self.features = features
        self.sparse_ids = sparse_ids
        self.id_tables = id_tables  # shared with the other tower; registered once by TwoTower
        self.embeddings = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        for feat in features:
            name, kind = feat["name"], feat["kind"]
            if kind == "categorical":
                self.embeddings[name] = nn.Embedding(feat["cardinality"], dim)
            elif kind == "dense":
                self.projections[name] = nn.Linear(1, dim)
            elif kind == "vector":
                self.projections[name] = nn.Linear(feat["length"], dim)
            elif kind == "id_bag":
                if feat["ids"] not in id_tables:
                    raise InputError("no id table for this bag", field=name, value=feat["ids"])
            else:
                raise InputError("unknown feature kind", field=name, value=kind)
        width = dim * len(features)
        # A linear path beside the MLP: pooled id embeddings reach the output directly.
        self.linear = nn.Linear(width, output_dim)
        self.mlp = None
        if hidden:
            layers: list[nn.Module] = []
            for size in hidden:
                layers += [nn.Linear(width, size), nn.ReLU()]
                width = size
            layers.append(nn.Linear(width, output_dim))
            self.mlp = nn.Sequential(*layers)

    def embed_features(
        self,
        batch: dict[str, Any],
        bag_weights: dict[str, torch.Tensor] | None = None,
        tables: dict[str, torch.Tensor] | None = None,
        pooled: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Concatenated per-feature embeddings (batch x dim * features). `tables` replaces the
        id tables by the rows a training step touches (its bags' ids then index those rows);
        `pooled` holds bags already pooled (TwoTower.pool_bags)."""
        parts = []
        for feat in self.features:
            name, kind = feat["name"], feat["kind"]
            value = batch[name]
            if pooled is not None and name in pooled:
                parts.append(pooled[name])
            elif kind == "categorical":
                parts.append(self.embeddings[name](value))
            elif kind == "dense":
                parts.append(self.projections[name](value.unsqueeze(1)))
            elif kind == "vector":
                parts.append(self.projections[name](value))
            else:
                flat, offsets, segment = value
                weights = None if bag_weights is None else bag_weights.get(name)
                if tables is not None:
                    table, sparse = tables[feat["ids"]], False
                else:
                    table, sparse = self.id_tables[feat["ids"]].weight, self.sparse_ids
                parts.append(pooled_bag(table, flat, offsets, segment, weights, sparse))
        return torch.cat(parts, dim=1)

    def forward(
        self,
        batch: dict[str, Any],
        bag_weights: dict[str, torch.Tensor] | None = None,
        tables: dict[str, torch.Tensor] | None = None,
        pooled: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Unit-length embeddings (batch x output_dim)."""
        x = self.embed_features(batch, bag_weights, tables, pooled)
        if self.mlp is None:
            return F.normalize(self.linear(x).float(), dim=1)
        # The linear path and the MLP's first layer read the same input: one matmul for
        # both, forward and backward, instead of two narrower ones.
        first = self.mlp[0]
        both = F.linear(
            x,
            torch.cat([self.linear.weight, first.weight]),
            torch.cat([self.linear.bias, first.bias]),
        )
        out, hidden = both.split([self.linear.out_features, first.out_features], dim=1)
        for layer in list(self.mlp)[1:]:
            hidden = layer(hidden)
        return F.normalize((out + hidden).float(), dim=1)


def bag_scale(
    flat: torch.Tensor, n_bags: int, segment: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """Per-id weights that make each bag's sum a weighted mean (empty bags stay zero)."""
    w = torch.ones(len(flat)) if weights is None else weights
    totals = torch.zeros(n_bags).index_add_(0, segment, w)
    return w / totals.clamp(min=1e-9)[segment]


def pooled_bag(
    table: torch.Tensor,
    flat: torch.Tensor,
    offsets: torch.Tensor,
    segment: torch.Tensor,
    weights: torch.Tensor | None,
    sparse: bool = False,
) -> torch.Tensor:
    """Weighted mean of table rows per bag; empty (or fully dropped) bags give zeros."""
    scale = bag_scale(flat, len(offsets), segment, weights)
    # Sparse gradients touch only the batch's rows: cheaper than dense ones for big tables.
    return F.embedding_bag(
        flat, table, offsets, mode="sum", per_sample_weights=scale, sparse=sparse
    )


class TwoTower(nn.Module):
    """Both towers, the shared id tables (accounts, topics) and a learned temperature."""

    def __init__(
        self,
        schema: dict[str, Any],
        n_ids: dict[str, int],
        dim: int = 64,
        hidden: tuple[int, ...] = (256,),
        output_dim: int = 64,
        temperature: float = 0.05,
        interaction_head: bool = False,
        sparse_ids: bool = False,
    ) -> None:
        super().__init__()
        self.sparse_ids = sparse_ids
        self.id_tables = nn.ModuleDict(
            {name: nn.Embedding(size, dim) for name, size in sorted(n_ids.items())}
        )
        for table in self.id_tables.values():
            nn.init.normal_(table.weight, std=0.05)
        self.consumer = Tower(
            schema["consumer"], self.id_tables, dim, hidden, output_dim, sparse_ids
        )
        self.producer = Tower(
            schema["producer"], self.id_tables, dim, hidden, output_dim, sparse_ids
        )
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.bias = nn.Parameter(torch.zeros(()))  # pointwise objective's logit offset
        self.interaction = None
        if interaction_head:
            self.interaction = nn.Sequential(
                nn.Linear(3 * output_dim, 128), nn.ReLU(), nn.Linear(128, 1)
            )

    def pool_bags(
        self,
        groups: list[tuple[Tower, dict[str, Any], dict[str, torch.Tensor] | None]],
        tables: dict[str, torch.Tensor] | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """The id bags of several (tower, batch, bag weights) inputs pooled with one
        embedding_bag call per id table: one gradient of a table per step instead of one per
        bag (at 34k accounts ~3 ms of a ~70 ms step). Per group: feature name -> pooled."""
        by_table: dict[str, list[tuple[int, str, torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        for g, (tower, batch, weights) in enumerate(groups):
            for feat in tower.features:
                if feat["kind"] == "id_bag":
                    flat, offsets, segment = batch[feat["name"]]
                    w = None if weights is None else weights.get(feat["name"])
                    scale = bag_scale(flat, len(offsets), segment, w)
                    by_table.setdefault(feat["ids"], []).append(
                        (g, feat["name"], flat, offsets, scale)
                    )
        out: list[dict[str, torch.Tensor]] = [{} for _ in groups]
        for ids, bags in by_table.items():
            table = tables[ids] if tables is not None else self.id_tables[ids].weight
            sparse = tables is None and self.sparse_ids
            starts = [0]
            for _, _, flat, _, _ in bags[:-1]:
                starts.append(starts[-1] + len(flat))
            pooled = F.embedding_bag(
                torch.cat([flat for _, _, flat, _, _ in bags]),
                table,
                torch.cat([offsets + start for (_, _, _, offsets, _), start in zip(bags, starts)]),
                mode="sum",
                per_sample_weights=torch.cat([scale for _, _, _, _, scale in bags]),
                sparse=sparse,
            )
            parts = torch.split(pooled, [len(offsets) for _, _, _, offsets, _ in bags])
            for (g, name, _, _, _), part in zip(bags, parts):
                out[g][name] = part
        return out

    @property
    def inv_temperature(self) -> torch.Tensor:
        """1 / temperature, clamped to a sane range."""
        return self.log_inv_temperature.clamp(0.0, math.log(100.0)).exp()

    def interaction_score(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """MLP score over [u, v, u*v] for aligned pairs (ranking studies, not ANN)."""
        if self.interaction is None:
            raise RuntimeError("model was built without interaction_head")
        return self.interaction(torch.cat([user, item, user * item], dim=1)).squeeze(1)


class MemberTowers(nn.Module):
    """The same side's towers of several models as one tower: their unit embeddings
    concatenated and scaled back to unit length, so a dot product of two such embeddings is
    the mean of the members' cosines (one exact or ANN index serves the ensemble)."""

    def __init__(self, towers: list[Tower]) -> None:
        super().__init__()
        self.towers = nn.ModuleList(towers)
        self.train(towers[0].training)  # encode() restores this mode on the members

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Unit-length embeddings (batch x members * output_dim)."""
        parts = [tower(batch) for tower in self.towers]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))


class TwoTowerEnsemble(nn.Module):
    """Two-tower models trained on the same features, scored as the mean of their
    cosines (e.g. the early-stopped towers beside the refit ones, see training/train.py)."""

    interaction = None  # a ranking head scores one model's embeddings, not the concatenation

    def __init__(self, members: list[TwoTower]) -> None:
        super().__init__()
        if len(members) < 2 or any(m.interaction is not None for m in members):
            raise ValueError("an ensemble needs two or more members without interaction heads")
        self.members = nn.ModuleList(members)

    # Built on access, not registered: the members' weights appear once in the state dict.
    @property
    def consumer(self) -> MemberTowers:
        """The members' consumer towers as one."""
        return MemberTowers([m.consumer for m in self.members])

    @property
    def producer(self) -> MemberTowers:
        """The members' producer towers as one."""
        return MemberTowers([m.producer for m in self.members])
