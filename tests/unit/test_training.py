"""Towers from the spec, ten-step training, save/load, and resume after a kill."""

import dataclasses
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from followrec.core.config import Config, SyntheticConfig, TrainConfig
from followrec.core.errors import InputError
from followrec.core.metrics import mean_recall
from followrec.features.spec import DEFAULT_SPEC
from followrec.features.split import split_dataset
from followrec.features.synthetic import generate
from followrec.training.model_io import load_model_dir, save_model_dir
from followrec.training.retrieval import two_tower_recommendations
from followrec.training.towers import TwoTower
from followrec.training.train import encode, fit_data, train_two_tower


def small_config(**train):
    base = dict(epochs=1, batch_size=256, validation_users=300, max_steps=None, threads=1)
    base.update(train)
    return Config(train=TrainConfig(**base))


def full_tables(ds, split):
    from followrec.features.transforms import build_features

    return build_features(ds.accounts, split.train, None, Config().features)


@pytest.fixture(scope="module")
def tiny():
    ds = generate(SyntheticConfig(n_accounts=1500, mean_follows=12, seed=3), progress=False)
    return ds, split_dataset(ds, Config().split)


@pytest.mark.parametrize(
    ("sparse_ids", "precision"),
    [("never", "fp32"), ("always", "fp32"), ("rows", "fp32"), ("rows", "bf16")],
)
def test_ten_steps_beat_random_retrieval(tiny, sparse_ids, precision):
    ds, split = tiny
    cfg = small_config(max_steps=10, sparse_ids=sparse_ids, precision=precision)
    trained = train_two_tower(ds, split, cfg, progress=False)
    users = split.eval_users()
    recs = two_tower_recommendations(trained, ds, split, users, 100, full_tables(ds, split))[0][
        "retrieval"
    ]
    model_recall = mean_recall(recs, users, split.holdout, ds.n_accounts)
    rng = np.random.default_rng(0)
    random_recs = np.stack([rng.choice(ds.n_accounts, 100, replace=False) for _ in users])
    random_recall = mean_recall(random_recs, users, split.holdout, ds.n_accounts)
    assert model_recall > 2 * random_recall


def test_a_new_producer_feature_trains_without_code_changes(tiny, tmp_path):
    import yaml

    ds, split = tiny
    accounts = ds.accounts.copy()
    accounts["verified"] = (np.arange(ds.n_accounts) % 7 == 0).astype(float)
    ds2 = dataclasses.replace(
        ds, accounts=accounts, feature_kinds={**ds.feature_kinds, "verified": "dense"}
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        **DEFAULT_SPEC,
        "producer": [*DEFAULT_SPEC["producer"], {"name": "verified", "kind": "dense"}],
    }))  # fmt: skip
    cfg = small_config(max_steps=3, spec=str(spec_file), refit_above=1.0)  # one model
    trained = train_two_tower(ds2, split, cfg, progress=False)
    assert "verified" in trained.model.producer.projections
    assert trained.schema["producer"][-1]["name"] == "verified"


def test_a_schema_entry_of_unknown_kind_fails_naming_the_feature():
    schema = {
        "consumer": [{"name": "language", "kind": "categorical", "cardinality": 3}],
        "producer": [{"name": "mood", "kind": "sparkly"}],
    }
    with pytest.raises(InputError, match="mood"):
        TwoTower(schema, {"accounts": 5, "topics": 3})


def test_invalid_training_setting_names_the_field(tiny):
    ds, split = tiny
    with pytest.raises(InputError, match="train.objective"):
        train_two_tower(ds, split, small_config(objective="hinge"), progress=False)


def test_logq_weight_scales_the_correction_and_rejects_negative_weights(tiny):
    ds, split = tiny
    empty = split.train.iloc[:0]

    def log_q(weight):
        tc = small_config(logq_weight=weight).train
        return fit_data(split.train, empty, ds.n_accounts, tc).log_q

    full, half = log_q(1.0), log_q(0.5)
    assert full.abs().max() > 0
    assert torch.allclose(half, full / 2)
    assert log_q(0.0) is None  # the same as logq_correction=false: no zero bias per step
    with pytest.raises(InputError, match="train.logq_weight"):
        train_two_tower(ds, split, small_config(logq_weight=-1.0), progress=False)


def test_save_and_load_give_the_same_embeddings(tiny, tmp_path):
    ds, split = tiny
    trained = train_two_tower(ds, split, small_config(max_steps=5), progress=False)
    path = save_model_dir(trained, tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "state_dict.pt"]
    loaded = load_model_dir(path)
    from followrec.features.transforms import build_features

    tables = build_features(ds.accounts, split.train, None, Config().features)
    a = encode(trained.model.consumer, trained.tensors(tables)[0], np.arange(50))
    b = encode(loaded.model.consumer, loaded.tensors(tables)[0], np.arange(50))
    assert torch.allclose(a, b)
    assert not loaded.model.consumer.training  # encoding leaves an eval model in eval


# Killed with SIGKILL from inside epoch 3, after epoch 2's checkpoint was written: a real
# kill -9 at a known point, not a race between the test's clock and the training speed.
RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from followrec.features.split import split_dataset
    from followrec.features.synthetic import generate
    from followrec.core.config import Config, SyntheticConfig, TrainConfig
    from followrec.training.train import train_two_tower
    ds = generate(SyntheticConfig(n_accounts=1500, mean_follows=12, seed=3), progress=False)
    split = split_dataset(ds, Config().split)
    cfg = Config(train=TrainConfig(epochs=15, batch_size=256, validation_users=300, threads=1,
                                   patience=99))
    def on_epoch(epoch, record):
        if epoch == 3:  # epoch 3 is trained, its checkpoint not yet written
            os.kill(os.getpid(), signal.SIGKILL)
    train_two_tower(ds, split, cfg, checkpoint=sys.argv[1], progress=False, on_epoch=on_epoch)
""")


def test_a_killed_run_resumes_and_ends_with_the_same_metrics(tiny, tmp_path):
    ds, split = tiny
    cfg = Config(
        train=TrainConfig(epochs=15, batch_size=256, validation_users=300, threads=1, patience=99)
    )
    clean = train_two_tower(ds, split, cfg, progress=False)

    ckpt = tmp_path / "ckpt.pt"
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(ckpt)], capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert torch.load(ckpt, weights_only=True)["state"]["epoch"] == 2

    resumed = train_two_tower(ds, split, cfg, checkpoint=ckpt, progress=False)
    assert len(resumed.history) == len(clean.history) == 15
    for a, b in zip(resumed.history, clean.history):
        assert a["val_recall_at_100"] == pytest.approx(b["val_recall_at_100"], abs=1e-3)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)


def test_interaction_head_reranks_the_retrieved_candidates(tiny):
    ds, split = tiny
    cfg = small_config(max_steps=10, interaction_head=True)
    trained = train_two_tower(ds, split, cfg, progress=False)
    users = split.eval_users()[:50]
    recs = two_tower_recommendations(trained, ds, split, users, 20, full_tables(ds, split))[0]
    assert set(recs) == {"retrieval", "rerank"}
    for a, b in zip(recs["retrieval"], recs["rerank"]):
        assert sorted(a.tolist()) == sorted(b.tolist())  # same candidates, new order
    assert not np.array_equal(recs["retrieval"], recs["rerank"])


def test_auto_epochs_train_small_graphs_until_min_steps_and_an_explicit_count_is_kept(tiny):
    from followrec.training.train import AUTO_EPOCHS, TrainState, _more_epochs

    def epochs_run(tc, steps_per_epoch):
        state = TrainState()
        while _more_epochs(state, tc):
            state.epoch += 1
            state.step += steps_per_epoch
        return state.epoch

    auto = TrainConfig(epochs=None, min_steps=100)
    assert epochs_run(auto, 50) == AUTO_EPOCHS  # a big graph: 8 epochs are 400 steps
    assert epochs_run(auto, 5) == 20  # a small one trains on to 100 steps
    assert epochs_run(TrainConfig(epochs=3, min_steps=100), 5) == 3
    # Through the real loop: 1,500 accounts at batch 4096 is a few steps per epoch.
    ds, split = tiny
    trained = train_two_tower(
        ds,
        split,
        small_config(epochs=None, min_steps=40, patience=99, batch_size=4096),
        progress=False,
    )
    assert len(trained.history) > AUTO_EPOCHS


def test_validation_holds_back_follows_only_of_the_users_it_reads(tiny):
    from followrec.training.train import validation_holdout

    ds, split = tiny
    follows = split.train
    tc = TrainConfig(validation_users=200, validation_fraction=0.2)
    mask = validation_holdout(follows, tc)
    users = follows["follower_id"].to_numpy()
    held_users = np.unique(users[mask])
    assert len(held_users) == 200  # 1,500 accounts: more users than that have 2+ follows
    # Each of them keeps ~80% of its follows for training; nobody else gives any up.
    per_user = follows[np.isin(users, held_users)].groupby("follower_id").size()
    held = follows[mask].groupby("follower_id").size()
    assert ((held / per_user).between(0.1, 0.5)).all()
    assert (held < per_user).all()
    assert np.array_equal(mask, validation_holdout(follows, tc))  # seeded
    other = validation_holdout(follows, dataclasses.replace(tc, seed=tc.seed + 1))
    assert not np.array_equal(mask, other)


@pytest.mark.parametrize("users", [0, -5])
def test_validation_users_below_one_is_refused_naming_the_setting(tiny, users):
    ds, split = tiny
    with pytest.raises(InputError, match="train.validation_users") as error:
        train_two_tower(ds, split, small_config(validation_users=users), progress=False)
    assert error.value.value == users


def test_refit_trains_fresh_towers_on_every_training_follow_for_the_best_epoch_count(tiny):
    from followrec.training.train import validation_holdout

    ds, split = tiny
    early = train_two_tower(ds, split, small_config(epochs=4, patience=99, refit_above=1.0),
                            progress=False)  # fmt: skip
    cfg = small_config(epochs=4, patience=99, refit_above=0.0, refit_keeps_early=False)
    refit = train_two_tower(ds, split, cfg, progress=False)
    assert early.refit is None and refit.members == 1
    best = 1 + int(np.argmax([h["val_recall_at_100"] for h in early.history]))
    assert refit.refit["epochs"] == best and refit.refit["follows"] == len(split.train)
    assert refit.history == early.history  # the same early-stopping fit chose the count
    # The held-back follows trained the refit: their accounts rank higher for their users.
    held = split.train[validation_holdout(split.train, cfg.train)]
    users, items = held["follower_id"].to_numpy(), held["followee_id"].to_numpy()
    tables = full_tables(ds, split)

    def mean_rank(trained):
        consumer_t, producer_t = trained.tensors(tables)
        scores = (
            encode(trained.model.consumer, consumer_t, users)
            @ encode(trained.model.producer, producer_t).T
        )
        own = scores[torch.arange(len(users)), torch.as_tensor(items)]
        return float((scores > own[:, None]).float().sum(1).mean())

    assert mean_rank(refit) < 0.8 * mean_rank(early)
    again = train_two_tower(ds, split, cfg, progress=False)
    for a, b in zip(again.model.state_dict().values(), refit.model.state_dict().values()):
        assert torch.equal(a, b)  # seeded


def test_refit_keeps_the_early_towers_and_scores_with_the_mean_of_both_cosines(tiny, tmp_path):
    from followrec.training.numpy_tower import NumpyTower
    from followrec.training.towers import TwoTowerEnsemble

    ds, split = tiny
    kept = train_two_tower(
        ds, split, small_config(epochs=2, patience=99, refit_above=0.0), progress=False
    )
    early = train_two_tower(
        ds, split, small_config(epochs=2, patience=99, refit_above=1.0), progress=False
    )
    assert isinstance(kept.model, TwoTowerEnsemble) and kept.refit["members"] == 2
    refit_member, early_member = kept.model.members
    for a, b in zip(early_member.state_dict().values(), early.model.state_dict().values()):
        assert torch.equal(a, b)  # the early-stopped towers, as trained
    tables = full_tables(ds, split)
    consumer_t, producer_t = kept.tensors(tables)
    users = np.arange(40)
    user_emb = encode(kept.model.consumer, consumer_t, users)
    item_emb = encode(kept.model.producer, producer_t)
    width = 2 * kept.train_config["output_dim"]
    assert user_emb.shape[1] == item_emb.shape[1] == kept.dimension == width
    assert torch.allclose(user_emb.norm(dim=1), torch.ones(len(users)), atol=1e-5)
    cosines = [
        encode(m.consumer, consumer_t, users) @ encode(m.producer, producer_t).T
        for m in kept.model.members
    ]
    assert torch.allclose(user_emb @ item_emb.T, (cosines[0] + cosines[1]) / 2, atol=1e-5)
    assert not torch.allclose(cosines[0], cosines[1], atol=1e-2)  # two different models
    assert all(not t.training for m in kept.model.members for t in (m.consumer, m.producer))
    # Saved and loaded, the ensemble gives the same embeddings, in torch and in numpy.
    loaded = load_model_dir(save_model_dir(kept, tmp_path / "model"))
    assert loaded.members == 2
    assert torch.equal(encode(loaded.model.consumer, consumer_t, users), user_emb)
    row = tables.consumer.iloc[7].to_dict()
    numpy_tower = NumpyTower(
        loaded.model.consumer,
        loaded.schema["consumer"],
        loaded.dense_stats["consumer"],
        loaded.train_config["max_history"],
        loaded.n_ids,
    )
    np.testing.assert_allclose(numpy_tower.embed(row), user_emb[7].numpy(), atol=1e-5)


def test_patience_waits_for_min_steps_under_auto_epochs_but_not_under_a_count(tiny, monkeypatch):
    # A scripted validation curve that rises once and then stays flat: an explicit epoch count
    # stops after patience flat epochs, auto epochs train on to min_steps first.
    import followrec.training.train as train_module

    curve = iter([0.30] + [0.29] * 500)
    monkeypatch.setattr(train_module, "mean_recall", lambda *args: next(curve))
    ds, split = tiny
    counted = train_two_tower(
        ds, split, small_config(epochs=15, patience=2, batch_size=4096), progress=False
    )
    assert len(counted.history) == 3  # the best epoch and two flat ones

    def auto_epochs_run(patience):
        nonlocal curve
        curve = iter([0.30] + [0.29] * 500)
        config = small_config(epochs=None, min_steps=40, patience=patience, batch_size=4096)
        return len(train_two_tower(ds, split, config, progress=False).history)

    assert auto_epochs_run(2) == auto_epochs_run(99) > train_module.AUTO_EPOCHS


@pytest.mark.parametrize("touched_rows", [False, True])
def test_bags_pooled_at_once_match_bag_by_bag(tiny, touched_rows):
    # One embedding_bag call per id table over both towers' bags (and a dropped-id weight)
    # gives the towers' outputs and the id tables' gradients of pooling bag by bag.
    from followrec.features.spec import load_spec
    from followrec.training.id_rows import touch_rows
    from followrec.training.train import new_model

    ds, split = tiny
    tables = full_tables(ds, split)
    trained = new_model(tables, load_spec(None), TrainConfig(), ds.n_accounts)
    model = trained.model
    consumer_t, producer_t = trained.tensors(tables)
    rows = torch.arange(0, 600, 3)
    cb, pb = consumer_t.batch(rows), producer_t.batch(rows + 1)
    flat = cb["follows"][0]
    weights = {"follows": (torch.arange(len(flat)) % 3 != 0).float()}
    leaves = None
    if touched_rows:
        _, leaves = touch_rows(
            model.id_tables, [(consumer_t.features, cb), (producer_t.features, pb)]
        )
    probe = torch.randn(len(rows), model.consumer.linear.out_features)

    def outputs_and_grads(pooled):
        model.zero_grad(set_to_none=True)
        for leaf in (leaves or {}).values():
            leaf.grad = None
        user = model.consumer(cb, weights, leaves, pooled[0] if pooled else None)
        item = model.producer(pb, None, leaves, pooled[1] if pooled else None)
        ((user + item) * probe).sum().backward()
        grads = leaves if touched_rows else {k: t.weight for k, t in model.id_tables.items()}
        return user.detach(), item.detach(), {k: v.grad.clone() for k, v in grads.items()}

    user, item, grads = outputs_and_grads(None)
    pooled = model.pool_bags([(model.consumer, cb, weights), (model.producer, pb, None)], leaves)
    assert set(pooled[0]) == {"topics", "follows", "recent_follows"}
    user_at_once, item_at_once, grads_at_once = outputs_and_grads(pooled)
    assert torch.equal(user, user_at_once) and torch.equal(item, item_at_once)
    for name, grad in grads.items():
        assert torch.allclose(grad, grads_at_once[name], atol=1e-6), name


def test_one_matmul_for_the_linear_path_and_the_first_layer_matches_two(tiny):
    # The tower runs its linear path and the MLP's first layer as one matmul; outputs and
    # gradients are those of linear(x) + mlp(x).
    from followrec.features.spec import load_spec
    from followrec.training.train import new_model

    ds, split = tiny
    tables = full_tables(ds, split)
    trained = new_model(tables, load_spec(None), TrainConfig(hidden=(32, 16)), ds.n_accounts)
    tower = trained.model.producer
    batch = trained.tensors(tables)[1].batch(torch.arange(0, 400, 2))
    probe = torch.randn(200, tower.linear.out_features)

    def output_and_grads(forward):
        tower.zero_grad(set_to_none=True)
        out = forward()
        (out * probe).sum().backward()
        return out.detach(), [p.grad.clone() for p in (tower.linear.weight, tower.mlp[0].weight)]

    def two_matmuls():
        x = tower.embed_features(batch)
        return torch.nn.functional.normalize(tower.linear(x) + tower.mlp(x), dim=1)

    fused, fused_grads = output_and_grads(lambda: tower(batch))
    plain, plain_grads = output_and_grads(two_matmuls)
    assert torch.allclose(fused, plain, atol=1e-6)
    for ours, theirs in zip(fused_grads, plain_grads):
        assert torch.allclose(ours, theirs, atol=1e-6)
