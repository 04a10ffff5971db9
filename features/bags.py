"""Id-bag (list) columns <-> CSR arrays, without per-row Python."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def bag_to_csr(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A column of lists -> (indptr, values); nulls become empty bags."""
    arr = pa.array(series, type=pa.list_(pa.int64()), from_pandas=True)
    if arr.null_count:
        arr = pa.compute.fill_null(arr, pa.scalar([], type=pa.list_(pa.int64())))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.int64)
    start = offsets[0]
    return offsets - start, values[start : offsets[-1]]


def csr_to_bag(indptr: np.ndarray, values: np.ndarray) -> pd.Series:
    """(indptr, values) -> a column of int64 numpy arrays."""
    arr = pa.ListArray.from_arrays(
        pa.array(np.asarray(indptr, dtype=np.int32)), pa.array(np.asarray(values, dtype=np.int64))
    )
    return pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)


def empty_bags(n: int) -> pd.Series:
    """A column of n empty bags."""
    return csr_to_bag(np.zeros(n + 1, dtype=np.int64), np.empty(0, dtype=np.int64))


def group_to_bag(
    owner: np.ndarray, items: np.ndarray, n_owners: int, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Group (owner, item) pairs into CSR rows, stable in `order` (or input order)."""
    owner = np.asarray(owner, dtype=np.int64)
    keys = (owner,) if order is None else (order, owner)
    perm = np.lexsort(keys)
    counts = np.bincount(owner, minlength=n_owners)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return indptr, np.asarray(items, dtype=np.int64)[perm]
