"""An index split into shards (by hash of the account id, or by a label such as language)
and searched as one: each shard answers its top k, the answers are merged by score. Shards
can be built by separate jobs (one per shard) and merged by listing them."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from followrec.core.errors import InputError
from followrec.indexing.factory import IndexChoice, build, set_search_effort


def shard_of(
    account_ids: np.ndarray, n_shards: int, labels: np.ndarray | None = None
) -> np.ndarray:
    """Per account, its shard: a label's code when labels are given, else a hash of the id."""
    if n_shards < 1:
        raise InputError("must be at least 1", field="n_shards", value=n_shards)
    if labels is not None:
        return np.unique(np.asarray(labels), return_inverse=True)[1] % n_shards
    # A multiplicative hash spreads consecutive ids evenly.
    mixed = (np.asarray(account_ids, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(
        32
    )
    return (mixed % np.uint64(n_shards)).astype(np.int64)


@dataclass
class Shard:
    """One shard: its index and the account id of each of its rows."""

    index: faiss.Index
    account_ids: np.ndarray


class ShardedIndex:
    """Several shards searched as one index over account ids."""

    def __init__(self, shards: list[Shard]) -> None:
        self.shards = [s for s in shards if s.index.ntotal > 0]
        if not self.shards:
            raise InputError("a sharded index needs at least one non-empty shard")

    @property
    def ntotal(self) -> int:
        return sum(s.index.ntotal for s in self.shards)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and account ids (not rows) of the top k over all shards, best first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, ids = [], []
        for shard in self.shards:
            s, rows = shard.index.search(queries, min(k, shard.index.ntotal))
            scores.append(s)
            ids.append(np.where(rows >= 0, shard.account_ids[np.maximum(rows, 0)], -1))
        all_scores = np.concatenate(scores, axis=1)
        all_ids = np.concatenate(ids, axis=1)
        all_scores[all_ids < 0] = -np.inf
        top = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(all_scores, top, axis=1), np.take_along_axis(all_ids, top, axis=1)

    def set_search_effort(self, choice: IndexChoice, value: int) -> None:
        """The same efSearch / nprobe on every shard."""
        for shard in self.shards:
            set_search_effort(shard.index, choice, value)


def build_shard(choice: IndexChoice, vectors: np.ndarray, account_ids: np.ndarray) -> Shard:
    """One shard's index (a batch job of its own in a distributed build)."""
    return Shard(build(choice, vectors), np.asarray(account_ids, dtype=np.int64))


def build_sharded(
    choice: IndexChoice,
    vectors: np.ndarray,
    account_ids: np.ndarray,
    n_shards: int,
    labels: np.ndarray | None = None,
) -> ShardedIndex:
    """Split by shard_of and build each shard with the same index settings."""
    which = shard_of(account_ids, n_shards, labels)
    return ShardedIndex(
        [
            build_shard(choice, vectors[which == s], np.asarray(account_ids)[which == s])
            for s in range(n_shards)
        ]
    )
