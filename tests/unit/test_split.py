"""Splits: per-user holdout, temporal cutoff, cold start, and no leakage into features."""

import numpy as np
import pandas as pd

from followrec.core.config import FeatureConfig, SplitConfig, SyntheticConfig
from followrec.features.split import split_dataset
from followrec.features.synthetic import generate
from followrec.features.transforms import build_features
from tests.conftest import make_dataset


def star_graph():
    # user 0 follows 10 accounts, user 1 follows 1, user 2 follows 3.
    edges = [(0, i) for i in range(3, 13)] + [(1, 3)] + [(2, 4), (2, 5), (2, 6)]
    return make_dataset(edges, n=13)


def test_per_user_holdout_fraction_minimum_and_seed():
    ds = star_graph()
    split = split_dataset(ds, SplitConfig(holdout_fraction=0.2, min_user_follows=2))
    held = split.holdout.groupby("follower_id").size().to_dict()
    assert held == {0: 2, 2: 1}  # 20% of 10; at least one of 3; user 1 has too few
    again = split_dataset(ds, SplitConfig(holdout_fraction=0.2, min_user_follows=2))
    assert again.holdout.equals(split.holdout)
    other = split_dataset(ds, SplitConfig(holdout_fraction=0.2, seed=99))
    assert not other.holdout.equals(split.holdout)
    assert len(split.train) + len(split.holdout) == len(ds.follows)


def test_cold_start_tags_users_with_few_training_follows():
    ds = star_graph()
    split = split_dataset(ds, SplitConfig(cold_start_max_follows=3))
    assert split.train_follow_count[0] == 8
    assert not split.cold_start[0] and split.cold_start[1] and split.cold_start[2]


def test_temporal_split_holds_out_the_latest_follows():
    edges = [(0, 1), (0, 2), (1, 2), (2, 0), (1, 0)]
    ds = make_dataset(edges, times=[10, 20, 30, 40, 50])
    split = split_dataset(ds, SplitConfig(holdout_fraction=0.2))
    assert split.kind == "temporal"
    assert split.holdout["event_timestamp"].min() > split.train["event_timestamp"].max()
    assert split.holdout[["follower_id", "followee_id"]].values.tolist() == [[1, 0]]


def test_engagements_after_the_cutoff_never_reach_features():
    ds = generate(SyntheticConfig(n_accounts=500, mean_follows=8), progress=False)
    split = split_dataset(ds, SplitConfig())
    assert split.kind == "temporal"
    assert (split.train_engagements["event_timestamp"] <= split.cutoff).all()
    assert len(split.train_engagements) < len(ds.engagements)


def _features_after_changing_holdout(ds, change):
    split = split_dataset(ds, SplitConfig())
    changed = ds.follows.copy()
    hold = changed.merge(split.holdout, how="left", indicator=True)["_merge"].eq("both")
    changed.loc[hold.to_numpy(), "followee_id"] = change(
        changed.loc[hold.to_numpy(), "followee_id"]
    )
    ds2 = type(ds)(name=ds.name, accounts=ds.accounts, follows=changed)
    split2 = split_dataset(ds2, SplitConfig())
    # Every optional graph feature on: none may see a holdout edge either.
    cfg = FeatureConfig(followers=50, two_hop=50, graph_embedding_dim=8)
    return (
        build_features(ds.accounts, split.train, None, cfg),
        build_features(ds2.accounts, split2.train, None, cfg),
        split,
    )


def test_no_holdout_edge_influences_any_training_feature(twitch_dir):
    from followrec.features.loaders import load_twitch

    ds = load_twitch(twitch_dir, ("PTBR",))
    # Rewire every holdout follow to another account: the features must not move.
    a, b, split = _features_after_changing_holdout(ds, lambda s: (s + 7) % ds.n_accounts)
    for name in ("consumer", "producer"):
        left, right = getattr(a, name), getattr(b, name)
        for col in left.columns:
            lv, rv = left[col].to_numpy(), right[col].to_numpy()
            if lv.dtype == object:
                assert all(np.allclose(x, y) for x, y in zip(lv, rv)), (name, col)
            else:
                assert np.array_equal(lv, rv), (name, col)
    # And no holdout follow sits in any consumer's history bag.
    bag = a.consumer[["user_id", "follows"]].explode("follows").dropna()
    pairs = set(zip(bag["user_id"], bag["follows"].astype(np.int64)))
    held = set(zip(split.holdout["follower_id"], split.holdout["followee_id"]))
    assert not pairs & held
    assert a.producer["follower_count"].sum() == len(split.train)
    assert {"followers", "followers_svd"} <= set(a.producer.columns)
    assert {"two_hop", "follows_svd"} <= set(a.consumer.columns)
    assert isinstance(a.feature_timestamp, pd.Timestamp)
