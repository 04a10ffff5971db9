"""Row-wise id-table updates: the step's bags index a small leaf of touched rows, and Adam
on those rows matches SparseAdam given the same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from followrec.core.config import TrainConfig
from followrec.core.errors import InputError
from followrec.training.id_rows import RowAdam, touch_rows
from followrec.training.towers import pooled_bag
from followrec.training.train import check_train_config, row_updates

FEATURES = [{"name": "follows", "kind": "id_bag", "ids": "accounts"}]
PRODUCER = [{"name": "account_id", "kind": "id_bag", "ids": "accounts"}]


def _bag(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(row) for row in ids])
    flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
    offsets = torch.cumsum(lengths, 0) - lengths
    return flat, offsets, torch.repeat_interleave(torch.arange(len(ids)), lengths)


def test_touched_rows_pool_like_the_whole_table():
    torch.manual_seed(0)
    tables = torch.nn.ModuleDict({"accounts": torch.nn.Embedding(10, 4)})
    consumer = {"follows": _bag([[7, 2, 2], [], [9]])}
    producer = {"account_id": _bag([[2], [5], [7]])}
    before = {
        name: pooled_bag(tables["accounts"].weight, *bag, None)
        for name, bag in [*consumer.items(), *producer.items()]
    }
    rows, leaves = touch_rows(tables, [(FEATURES, consumer), (PRODUCER, producer)])
    assert rows["accounts"].tolist() == [2, 5, 7, 9]  # each touched row once, sorted
    assert consumer["follows"][0].tolist() == [2, 0, 0, 3]  # positions in the leaf
    assert producer["account_id"][0].tolist() == [0, 1, 2]
    for name, bag in [*consumer.items(), *producer.items()]:
        assert torch.allclose(pooled_bag(leaves["accounts"], *bag, None), before[name])
    assert leaves["accounts"].requires_grad and leaves["accounts"].is_leaf


def test_row_adam_matches_sparse_adam_on_the_same_gradients():
    torch.manual_seed(1)
    dense_init = torch.randn(12, 3)
    ours = torch.nn.ModuleDict({"accounts": torch.nn.Embedding(12, 3)})
    theirs = torch.nn.Embedding(12, 3, sparse=True)
    with torch.no_grad():
        ours["accounts"].weight.copy_(dense_init)
        theirs.weight.copy_(dense_init)
    row_adam = RowAdam(ours, lr=0.1)
    sparse_adam = torch.optim.SparseAdam(theirs.parameters(), lr=0.1)
    for step_ids in ([1, 4, 4, 9], [4, 0], [11, 1, 1]):
        ids = torch.tensor(step_ids)
        target = torch.randn(len(ids), 3)
        sparse_adam.zero_grad()
        F.mse_loss(theirs(ids), target, reduction="sum").backward()
        sparse_adam.step()
        batch = {"account_id": _bag([[i] for i in step_ids])}
        rows, leaves = touch_rows(ours, [(PRODUCER, batch)])
        pooled = pooled_bag(leaves["accounts"], *batch["account_id"], None)
        F.mse_loss(pooled, target, reduction="sum").backward()
        row_adam.step(rows, leaves)
    assert torch.allclose(ours["accounts"].weight, theirs.weight, atol=1e-6)
    untouched = [2, 3, 5, 6, 7, 8, 10]
    assert torch.equal(ours["accounts"].weight[untouched], dense_init[untouched])


def test_row_updates_and_precision_are_checked_naming_the_setting():
    big, small = 1_000_000, 34_000
    assert row_updates(TrainConfig(), world=1, n_accounts=big)
    assert not row_updates(TrainConfig(), world=1, n_accounts=small)  # dense Adam is faster
    assert not row_updates(TrainConfig(), world=2, n_accounts=big)  # DDP averages gradients
    assert not row_updates(TrainConfig(sparse_ids="never"), world=1, n_accounts=big)
    assert row_updates(TrainConfig(sparse_ids="rows"), world=1, n_accounts=small)
    with pytest.raises(InputError, match="train.sparse_ids"):
        row_updates(TrainConfig(sparse_ids="rows"), world=2, n_accounts=big)
    with pytest.raises(InputError, match="train.precision"):
        check_train_config(TrainConfig(precision="fp16"))
