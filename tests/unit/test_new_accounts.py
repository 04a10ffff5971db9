"""Accounts newer than the model: their ids have no row in the model's tables, so bags leave
them out and the producer tower places them from their other features; an index refresh
then adds them without retraining."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from followrec.core.config import Config, IndexConfig, SyntheticConfig, TrainConfig
from followrec.core.errors import InputError
from followrec.features.split import split_dataset
from followrec.features.synthetic import generate
from followrec.features.transforms import build_features
from followrec.indexing.refresh import refresh_version
from followrec.indexing.store import load_version
from followrec.training.data import Bag
from followrec.training.model_io import save_model_dir
from followrec.training.train import check_train_config, train_two_tower


def test_bags_leave_out_ids_the_table_has_no_row_for():
    bags = Bag.from_column(pd.Series([[0, 5, 2], [7], [], [4]]), rows=5)
    assert bags.values.tolist() == [0, 2, 4]
    assert bags.offsets.tolist() == [0, 2, 2, 2, 3]
    own = Bag.from_column(pd.Series([1, 6, 3], dtype="int64"), rows=5)
    assert own.values.tolist() == [1, 3] and own.offsets.tolist() == [0, 1, 1, 2]
    limited = Bag.from_column(pd.Series([[9, 1, 2, 3]]), limit=2, rows=5)
    assert limited.values.tolist() == [1, 2]  # unknown ids go first, then the limit


def test_new_account_dropout_is_checked_naming_the_setting():
    with pytest.raises(InputError, match="train.new_account_dropout"):
        check_train_config(TrainConfig(new_account_dropout=1.0))


def test_refresh_adds_accounts_newer_than_the_model(tmp_path):
    ds = generate(SyntheticConfig(n_accounts=600, mean_follows=10, seed=5), progress=False)
    n_old = 540  # the last 60 accounts join after training
    follows = ds.follows
    old = ds.follows[(follows["follower_id"] < n_old) & (follows["followee_id"] < n_old)]
    eng = ds.engagements
    old_eng = eng[(eng["user_id"] < n_old) & (eng["account_id"] < n_old)].reset_index(drop=True)
    old_ds = replace(ds, accounts=ds.accounts.iloc[:n_old], follows=old.reset_index(drop=True),
                     engagements=old_eng)  # fmt: skip
    split = split_dataset(old_ds, Config().split)
    train = TrainConfig(epochs=1, batch_size=128, validation_users=200, threads=1,
                        new_account_dropout=0.5)  # fmt: skip
    trained = train_two_tower(old_ds, split, Config(train=train), progress=False)
    assert trained.n_ids["accounts"] == n_old
    model_dir = save_model_dir(trained, tmp_path / "model")

    # The snapshot at refresh: every account, the new ones with their follows.
    tables = build_features(ds.accounts, ds.follows, eng, Config().features, ds.feature_kinds)
    built = refresh_version(tmp_path / "indexes", "1", model_dir, tables, IndexConfig())
    assert built["count"] == 600 and built["new_accounts"] == 60
    index, account_ids, _ = load_version(tmp_path / "indexes", built["index_version"])
    assert account_ids.tolist() == list(range(600))
    vectors = index.reconstruct_n(0, index.ntotal)
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # Placed by their features, not all on one point.
    assert len(np.unique(vectors[n_old:].round(4), axis=0)) > 50
    # Retrievable: the searched structure (ANN graph included) reaches every new account.
    _, found = index.search(vectors[n_old:], 1)
    assert (account_ids[found[:, 0]] == np.arange(n_old, 600)).mean() >= 0.95
