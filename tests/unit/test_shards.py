"""Sharded indexes: exact shards merged equal one exact index; shards split evenly by hash
or follow labels."""

import numpy as np
import pytest

from followrec.core.errors import InputError
from followrec.indexing.factory import IndexChoice, build
from followrec.indexing.shards import ShardedIndex, build_shard, build_sharded, shard_of


def test_exact_shards_searched_as_one_equal_a_single_exact_index():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    ids = np.arange(10_000, 13_000)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    single = build(IndexChoice("flat"), vectors)
    scores, rows = single.search(queries, 50)
    sharded = build_sharded(IndexChoice("flat"), vectors, ids, 4)
    assert sharded.ntotal == 3000 and len(sharded.shards) == 4
    s_scores, s_ids = sharded.search(queries, 50)
    assert np.array_equal(s_ids, ids[rows])
    assert np.allclose(s_scores, scores, atol=1e-5)


def test_shards_split_evenly_by_hash_or_by_label():
    which = shard_of(np.arange(100_000), 4)
    assert set(np.bincount(which)) <= set(range(24_000, 26_000))
    labels = np.array(["pt", "de", "pt", "en"])
    assert shard_of(np.arange(4), 8, labels).tolist() == [2, 0, 2, 1]
    with pytest.raises(InputError, match="n_shards"):
        shard_of(np.arange(4), 0)


def test_shards_built_separately_merge_into_one_index():
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((100, 8)).astype(np.float32) for _ in range(2)]
    shards = [
        build_shard(IndexChoice("flat"), p, np.arange(100) + 100 * i) for i, p in enumerate(parts)
    ]
    merged = ShardedIndex(shards)
    _, found = merged.search(parts[1][:1], 1)
    assert found[0, 0] == 100  # the query is shard 1's first vector
