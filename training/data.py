"""Feature tables -> tensors for every account, and vectorised batch gathering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from followrec.features.bags import bag_to_csr


@dataclass
class Bag:
    """A ragged id list per row (CSR): values[offsets[i]:offsets[i+1]] belongs to row i."""

    values: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def from_column(
        cls, column: pd.Series, limit: int | None = None, rows: int | None = None
    ) -> Bag:
        """From a list column (or an integer column: one id per row), first `limit` ids;
        ids >= `rows` (no row in the table) are left out."""
        if pd.api.types.is_integer_dtype(column):
            values = column.to_numpy(dtype=np.int64)
            if rows is None:
                return cls(torch.from_numpy(values.copy()), torch.arange(len(values) + 1))
            known = values < rows
            indptr = np.concatenate([[0], np.cumsum(known)])
            return cls(torch.from_numpy(values[known].copy()), torch.from_numpy(indptr))
        indptr, values = bag_to_csr(column)
        if rows is not None:
            known = values < rows
            row_of = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            lengths = np.bincount(row_of[known], minlength=len(indptr) - 1)
            values = values[known]
            indptr = np.concatenate([[0], np.cumsum(lengths)])
        if limit is not None:
            lengths = np.minimum(np.diff(indptr), limit)
            keep = np.arange(len(values)) - np.repeat(indptr[:-1], np.diff(indptr)) < np.repeat(
                lengths, np.diff(indptr)
            )
            values = values[keep]
            indptr = np.concatenate([[0], np.cumsum(lengths)])
        return cls(torch.from_numpy(values.astype(np.int64)), torch.from_numpy(indptr))

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flat ids, per-row offsets, row index of each id) for a batch of rows."""
        # index_select, not x[i]: advanced indexing is several times slower on CPU.
        starts = self.offsets.index_select(0, rows)
        lengths = self.offsets.index_select(0, rows + 1) - starts
        batch_offsets = torch.cumsum(lengths, 0) - lengths
        segment = torch.repeat_interleave(torch.arange(len(rows)), lengths)
        flat = (starts - batch_offsets).index_select(0, segment) + torch.arange(len(segment))
        return self.values.index_select(0, flat), batch_offsets, segment


def dense_values(column: pd.Series | np.ndarray, transform: str | None) -> np.ndarray:
    """A dense feature as float32, with its optional transform; missing values are 0."""
    values = np.asarray(column, dtype=np.float64)
    if transform == "log1p":
        values = np.log1p(np.maximum(values, 0))
    return np.nan_to_num(values).astype(np.float32)


def category_codes(codes: np.ndarray, cardinality: int) -> np.ndarray:
    """Codes outside the fitted vocabulary share its last row (unseen values) or the first."""
    return np.clip(codes, 0, cardinality - 1)


def bag_ids(ids: np.ndarray, limit: int | None, rows: int | None) -> np.ndarray:
    """One row's bag as `Bag.from_column` keeps it: ids with a table row, the first `limit`."""
    if rows is not None:
        ids = ids[ids < rows]
    return ids if limit is None else ids[:limit]


@dataclass
class TowerTensors:
    """Every feature of one tower for all rows, in spec order."""

    features: list[dict[str, Any]]  # schema entries
    tensors: dict[str, Any]  # name -> Tensor or Bag

    @property
    def n_rows(self) -> int:
        """Number of rows (accounts) the tensors cover."""
        first = next(iter(self.tensors.values()))
        return len(first.offsets) - 1 if isinstance(first, Bag) else len(first)

    def batch(self, rows: torch.Tensor) -> dict[str, Any]:
        """The inputs of `rows`: tensors sliced, bags gathered."""
        out: dict[str, Any] = {}
        for name, value in self.tensors.items():
            out[name] = (
                value.gather(rows) if isinstance(value, Bag) else value.index_select(0, rows)
            )
        return out


def fit_dense_stats(frame: pd.DataFrame, features: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Mean and std of each dense feature (after its transform), fitted on training tables."""
    stats = {}
    for feat in features:
        if feat["kind"] == "dense":
            values = dense_values(frame[feat["name"]], feat.get("transform"))
            stats[feat["name"]] = [float(values.mean()), float(values.std() + 1e-6)]
    return stats


def tower_tensors(
    frame: pd.DataFrame,
    features: list[dict[str, Any]],
    dense_stats: dict[str, list[float]],
    bag_limit: int | None = None,
    id_rows: dict[str, int] | None = None,
) -> TowerTensors:
    """Tensors for one tower from its feature table, following the schema. `id_rows` (the
    model's id table sizes) leaves out of every bag the ids a table has no row for: accounts
    newer than the model, which it then embeds from their other features."""
    tensors: dict[str, Any] = {}
    for feat in features:
        col = frame[feat["name"]]
        kind = feat["kind"]
        if kind == "categorical":
            codes = category_codes(col.to_numpy(dtype=np.int64), feat["cardinality"])
            tensors[feat["name"]] = torch.from_numpy(codes)
        elif kind == "id_bag":
            limit = bag_limit if feat.get("ids") == "accounts" else None
            rows = None if id_rows is None else id_rows.get(feat["ids"])
            tensors[feat["name"]] = Bag.from_column(col, limit, rows)
        elif kind == "dense":
            mean, std = dense_stats[feat["name"]]
            values = (dense_values(col, feat.get("transform")) - mean) / std
            tensors[feat["name"]] = torch.from_numpy(values)
        else:
            tensors[feat["name"]] = torch.from_numpy(np.stack(col.to_numpy()).astype(np.float32))
    return TowerTensors(features=features, tensors=tensors)
