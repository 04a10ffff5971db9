"""The serving path's numpy consumer tower gives the torch tower's embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from followrec.core.config import Config, SyntheticConfig, TrainConfig
from followrec.features.split import split_dataset
from followrec.features.synthetic import generate
from followrec.features.transforms import build_features
from followrec.training.numpy_tower import NumpyTower
from followrec.training.train import encode, train_two_tower


@pytest.fixture(scope="module")
def trained_and_tables():
    ds = generate(SyntheticConfig(n_accounts=800, mean_follows=10, seed=4), progress=False)
    split = split_dataset(ds, Config().split)
    cfg = Config(train=TrainConfig(epochs=1, max_steps=20, batch_size=128, threads=1,
                                   validation_users=100, max_history=5))  # fmt: skip
    trained = train_two_tower(ds, split, cfg, progress=False)
    tables = build_features(ds.accounts, split.train, None, cfg.features, ds.feature_kinds)
    return trained, tables


def _tower(trained):
    return NumpyTower(
        trained.model.consumer,
        trained.schema["consumer"],
        trained.dense_stats["consumer"],
        trained.train_config["max_history"],
        trained.n_ids,
    )


def test_numpy_consumer_tower_matches_torch(trained_and_tables):
    trained, tables = trained_and_tables
    consumer, _ = trained.tensors(tables)
    rows = np.arange(0, 800, 7)
    expected = encode(trained.model.consumer, consumer, rows).numpy()
    tower = _tower(trained)
    frame = tables.consumer
    got = np.stack([tower.embed(frame.iloc[r].to_dict()) for r in rows])
    assert np.allclose(got, expected, atol=1e-5)
    # The history limit (5) and ids without a table row are applied as in training.
    long = frame.iloc[rows[np.argmax(frame["follows"].iloc[rows].map(len).to_numpy())]]
    assert len(long["follows"]) > 5


def test_missing_values_embed_like_zeros_and_empty_bags(trained_and_tables):
    trained, _ = trained_and_tables
    tower = _tower(trained)
    zeros = {}
    for feat in trained.schema["consumer"]:
        zeros[feat["name"]] = [] if feat["kind"] == "id_bag" else 0
    missing = {name: None for name in zeros}
    assert np.allclose(tower.embed(missing), tower.embed(zeros))
    unknown = dict(zeros, follows=[10_000, 20_000])  # accounts newer than the model
    assert np.allclose(tower.embed(unknown), tower.embed(zeros))
    assert np.isclose(np.linalg.norm(tower.embed(zeros)), 1.0, atol=1e-5)
