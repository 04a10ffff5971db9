"""Feature transforms on hand-made frames, and the declarative tower spec."""

import numpy as np
import pytest

from followrec.core.config import FeatureConfig
from followrec.core.errors import InputError
from followrec.features.spec import DEFAULT_SPEC, build_schema, load_spec, parse_spec
from followrec.features.transforms import apply_user_event, build_features, follow_count_bucket
from tests.conftest import make_dataset


def tables():
    # 0 follows 1 (t=10), 2 (t=30), 3 (t=20); 1 follows 2; 4 (fr) follows 2.
    ds = make_dataset(
        [(0, 1), (0, 2), (0, 3), (1, 2), (4, 2)],
        n=5,
        languages=["en", "en", "en", "fr", "fr"],
        times=[10, 30, 20, 40, 50],
        topics=[[1], [2], [3, 4], [4], [1, 4]],
    )
    return build_features(
        ds.accounts, ds.follows, None, FeatureConfig(recent_follows=2, follower_top_topics=2)
    )


def test_consumer_features():
    c = tables().consumer.set_index("user_id")
    assert c.loc[0, "follow_count"] == 3
    assert c.loc[0, "follows"].tolist() == [2, 3, 1]  # most recent first
    assert c.loc[0, "recent_follows"].tolist() == [2, 3]
    assert c.loc[0, "follow_count_bucket"] == 2  # floor(log2(4))
    assert c.loc[2, "follows"].tolist() == []
    assert c.loc[4, "topics"].tolist() == [1, 4]


def test_producer_features_aggregate_followers():
    t = tables()
    p = t.producer.set_index("account_id")
    vocab = t.vocabularies["language"]
    assert vocab == ["<unk>", "en", "fr"]
    assert p.loc[2, "follower_count"] == 3
    # followers of 2: 0 (en), 1 (en), 4 (fr)
    assert p.loc[2, "follower_language_dist"].tolist() == pytest.approx([0, 2 / 3, 1 / 3])
    assert p.loc[2, "follower_same_language_share"] == pytest.approx(2 / 3)
    # follower topics of 2: {1}, {2}, {1, 4} -> 1 twice, then 2 and 4 once (ties by id)
    assert p.loc[2, "follower_top_topics"].tolist() == [1, 2]
    assert p.loc[3, "follower_count"] == 1
    assert p.loc[0, "follower_count"] == 0
    assert p.loc[0, "follower_language_dist"].tolist() == [0, 0, 0]


def test_graph_features_by_hand():
    # 0 follows 1 (t=10), 2 (t=30), 3 (t=20); 1 follows 2; 4 follows 2; 2 follows 3 and 0.
    ds = make_dataset(
        [(0, 1), (0, 2), (0, 3), (1, 2), (4, 2), (2, 3), (2, 0)],
        n=5,
        times=[10, 30, 20, 40, 50, 60, 70],
    )
    cfg = FeatureConfig(followers=2, two_hop=3, two_hop_fanout=5, graph_embedding_dim=2)
    t = build_features(ds.accounts, ds.follows, None, cfg)
    p, c = t.producer.set_index("account_id"), t.consumer.set_index("user_id")
    # Followers, most recent first, at most 2: 2 is followed by 4 (t=50), 1 (40), 0 (30).
    assert p.loc[2, "followers"].tolist() == [4, 1]
    assert p.loc[3, "followers"].tolist() == [2, 0]
    assert p.loc[4, "followers"].tolist() == []
    # Two-step paths from 0: 0->1->2, 0->2->3, 0->2->0 (itself: left out), 0->3 (none).
    # 2 and 3 are reached once each (ties by id); 0 itself never.
    assert c.loc[0, "two_hop"].tolist() == [2, 3]
    # From 4: 4->2->3, 4->2->0.
    assert c.loc[4, "two_hop"].tolist() == [0, 3]
    # From 1: 1->2->0, 1->2->3; from 3 (follows nobody): empty.
    assert c.loc[1, "two_hop"].tolist() == [0, 3]
    assert c.loc[3, "two_hop"].tolist() == []
    # Spectral embedding: one vector per account on each side, the same on a rebuild.
    assert np.stack(c["follows_svd"]).shape == (5, 2)
    again = build_features(ds.accounts, ds.follows, None, cfg)
    assert np.array_equal(np.stack(c["follows_svd"]), np.stack(again.consumer["follows_svd"]))
    assert np.array_equal(np.stack(p["followers_svd"]), np.stack(again.producer["followers_svd"]))


def test_graph_features_are_off_by_default():
    t = tables()
    assert not {"two_hop", "follows_svd"} & set(t.consumer.columns)
    assert not {"followers", "followers_svd"} & set(t.producer.columns)


def test_two_hop_counts_paths_across_row_blocks():
    import scipy.sparse as sp

    from followrec.features.graph import two_hop_bags

    rng = np.random.default_rng(0)
    m = sp.csr_matrix((rng.random((60, 60)) < 0.1).astype(np.float32))
    whole = two_hop_bags(m, 5)
    blocked = two_hop_bags(m, 5, block_rows=7)
    assert np.array_equal(whole[0], blocked[0]) and np.array_equal(whole[1], blocked[1])
    dense = (m @ m).toarray()
    np.fill_diagonal(dense, 0)
    ptr, ids = whole
    for user in range(60):
        expected = sorted(np.flatnonzero(dense[user]), key=lambda a: (-dense[user, a], a))[:5]
        assert ids[ptr[user] : ptr[user + 1]].tolist() == expected


CONSUMER_EVENT_COLUMNS = ["follows", "recent_follows", "follow_count", "follow_count_bucket"]
PAIRS = [(0, 1), (0, 2), (0, 3), (1, 2), (4, 2)]
TIMES = [10, 30, 20, 40, 50]


def consumer_row(pairs, times, user):
    ds = make_dataset(pairs, n=5, times=times)
    cfg = FeatureConfig(recent_follows=2, max_history=3)
    frame = build_features(ds.accounts, ds.follows, None, cfg).consumer
    return frame[frame["user_id"] == user].reset_index(drop=True), cfg


@pytest.mark.parametrize(
    ("kind", "account", "pairs", "times"),
    [
        ("follow", 4, [*PAIRS, (0, 4)], [*TIMES, 60]),  # new, most recent; history cap 3
        ("follow", 1, PAIRS, [60, 30, 20, 40, 50]),  # a repeat only moves it to the front
        ("unfollow", 2, [p for p in PAIRS if p != (0, 2)], [10, 20, 40, 50]),
    ],
)
def test_an_online_event_gives_the_row_the_offline_builder_would(kind, account, pairs, times):
    """Train/serve consistency: the online update equals rebuilding with the event."""
    row, cfg = consumer_row(PAIRS, TIMES, 0)
    apply_user_event(row, kind, account, None, cfg)
    rebuilt, _ = consumer_row(pairs, times, 0)
    for column in CONSUMER_EVENT_COLUMNS:
        online, offline = np.asarray(row.at[0, column]), np.asarray(rebuilt.at[0, column])
        if kind == "unfollow" and column == "recent_follows":
            # The online row keeps no follows beyond the bag, so one that falls out of
            # recent_follows on a follow does not come back on an unfollow (a prefix).
            offline = offline[: len(online)]
        assert np.array_equal(online, offline), column


def test_follow_count_bucket():
    assert follow_count_bucket(np.array([0, 1, 2, 3, 7, 10**9])).tolist() == [0, 1, 1, 2, 3, 15]


def test_default_spec_schema_and_hash_is_stable():
    t = tables()
    schema = build_schema(load_spec(), t)
    assert [f["name"] for f in schema["consumer"]] == [f["name"] for f in DEFAULT_SPEC["consumer"]]
    vec = next(f for f in schema["producer"] if f["name"] == "follower_language_dist")
    assert vec["length"] == 3
    assert build_schema(load_spec(), t)["hash"] == schema["hash"]


def test_a_new_feature_is_declarative(tmp_path):
    t = tables()
    t.producer["verified_score"] = np.linspace(0, 1, len(t.producer))
    tree = {
        **DEFAULT_SPEC,
        "producer": [*DEFAULT_SPEC["producer"], {"name": "verified_score", "kind": "dense"}],
    }
    schema = build_schema(parse_spec(tree), t)
    assert schema["producer"][-1] == {"name": "verified_score", "kind": "dense", "transform": None}
    assert schema["hash"] != build_schema(load_spec(), t)["hash"]


def test_spec_naming_a_missing_feature_fails_with_its_name():
    tree = {
        **DEFAULT_SPEC,
        "consumer": [
            *DEFAULT_SPEC["consumer"],
            {"name": "favourites", "kind": "id_bag", "ids": "accounts"},
        ],
    }
    with pytest.raises(InputError, match="consumer.favourites"):
        build_schema(parse_spec(tree), tables())


def test_spec_with_a_mismatched_kind_fails_with_its_name():
    tree = {**DEFAULT_SPEC, "producer": [{"name": "follower_language_dist", "kind": "dense"}]}
    with pytest.raises(InputError, match="producer.follower_language_dist"):
        build_schema(parse_spec(tree), tables())
    with pytest.raises(InputError, match="consumer.language.kind"):
        parse_spec({**DEFAULT_SPEC, "consumer": [{"name": "language", "kind": "embedding"}]})


@pytest.mark.parametrize("name", ["followers.yaml", "graph_bags.yaml", "graph_all.yaml"])
def test_the_graph_feature_specs_match_tables_built_with_those_features(name):
    from pathlib import Path

    ds = make_dataset([(0, 1), (0, 2), (1, 2), (2, 0), (3, 2), (4, 0), (5, 1)], n=6)
    cfg = FeatureConfig(followers=50, two_hop=50, graph_embedding_dim=2)
    t = build_features(ds.accounts, ds.follows, None, cfg)
    spec = load_spec(Path(__file__).resolve().parents[2] / "benchmarks" / "specs" / name)
    schema = build_schema(spec, t)
    kinds = {f["name"]: f["kind"] for f in schema["consumer"] + schema["producer"]}
    assert kinds["followers"] == "id_bag"
    # Without the features switched on, the same spec fails naming the missing column.
    with pytest.raises(InputError, match="feature not in the"):
        build_schema(spec, tables())
