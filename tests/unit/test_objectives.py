"""Loss shapes and masking on batches small enough to compute by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from followrec.training.objectives import (
    CandidateColumns,
    FollowIndex,
    in_batch_softmax,
    pointwise_logistic,
    sampling_log_q,
)

USER = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
ITEM = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
ONE = torch.tensor(1.0)


def manual_ce(logits_row, positive, allowed):
    kept = [logits_row[j] for j in allowed]
    return -(logits_row[positive] - math.log(sum(math.exp(x) for x in kept)))


def test_plain_in_batch_softmax_is_cross_entropy_over_the_batch():
    user_ids, item_ids = torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12])
    loss = in_batch_softmax(USER, ITEM, user_ids, item_ids, ONE, None, None)
    logits = (USER @ ITEM.T).tolist()
    expected = sum(manual_ce(logits[i], i, [0, 1, 2]) for i in range(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_followed_in_batch_items_and_repeats_are_masked():
    # user 0 follows account 11 (row 1's item); rows 1 and 2 share account 12.
    user_ids, item_ids = torch.tensor([0, 1, 2]), torch.tensor([10, 12, 12])
    follows = FollowIndex(torch.tensor([0]), torch.tensor([11]), 20)
    loss = in_batch_softmax(USER, ITEM, user_ids, torch.tensor([10, 11, 12]), ONE, None, follows)
    logits = (USER @ ITEM.T).tolist()
    expected = (
        manual_ce(logits[0], 0, [0, 2])
        + manual_ce(logits[1], 1, [0, 1, 2])
        + manual_ce(logits[2], 2, [0, 1, 2])
    ) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    repeat = in_batch_softmax(USER, ITEM, user_ids, item_ids, ONE, None, None)
    expected = (
        manual_ce(logits[0], 0, [0, 1, 2])
        + manual_ce(logits[1], 1, [0, 1])
        + manual_ce(logits[2], 2, [0, 2])
    ) / 3
    assert repeat.item() == pytest.approx(expected, rel=1e-6)


def test_logq_correction_subtracts_log_sampling_probability():
    user_ids, item_ids = torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12])
    log_q = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    loss = in_batch_softmax(USER, ITEM, user_ids, item_ids, torch.tensor(2.0), log_q, None)
    logits = (2 * USER @ ITEM.T - log_q.unsqueeze(0)).tolist()
    expected = sum(manual_ce(logits[i], i, [0, 1, 2]) for i in range(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_gradients_match_a_dense_masked_reference():
    # Temperature, logQ and masking are applied in a fused order; the gradients of users,
    # items and the temperature must be those of the plain formula.
    gen = torch.Generator().manual_seed(5)
    user0, item0 = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    user_ids, item_ids = torch.arange(6), torch.tensor([20, 21, 22, 22, 23, 24])
    follows = FollowIndex(torch.tensor([0, 3, 5]), torch.tensor([21, 24, 20]), 30)
    log_q = torch.log(torch.tensor([0.1, 0.2, 0.05, 0.05, 0.3, 0.3]))
    grads = []
    for fused in (True, False):
        user, item = user0.clone().requires_grad_(), item0.clone().requires_grad_()
        inv_t = torch.tensor(3.0, requires_grad=True)
        if fused:
            loss = in_batch_softmax(user, item, user_ids, item_ids, inv_t, log_q, follows)
        else:
            masked = (item_ids.unsqueeze(0) == item_ids.unsqueeze(1)) & ~torch.eye(6).bool()
            for u, a in ((0, 21), (3, 24), (5, 20)):
                masked[u] |= (item_ids == a) & (torch.arange(6) != u)
            logits = (user @ item.T) * inv_t - log_q.unsqueeze(0)
            loss = F.cross_entropy(logits.masked_fill(masked, float("-inf")), torch.arange(6))
        loss.backward()
        grads.append((loss.detach(), user.grad, item.grad, inv_t.grad))
    for fused, plain in zip(*grads):
        assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-6)


def test_mixed_negatives_add_columns():
    user_ids, item_ids = torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12])
    extra = torch.tensor([[0.0, -1.0]])
    loss = in_batch_softmax(
        USER, ITEM, user_ids, item_ids, ONE, None, None, extra, torch.tensor([13])
    )
    logits = torch.cat([USER @ ITEM.T, USER @ extra.T], dim=1).tolist()
    expected = sum(manual_ce(logits[i], i, [0, 1, 2, 3]) for i in range(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_pointwise_logistic():
    negative = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]], [[-0.8, -0.6]]])
    loss = pointwise_logistic(USER, ITEM, negative, ONE, torch.tensor(0.5))
    pos = (USER * ITEM).sum(1) + 0.5
    neg = torch.einsum("bd,bnd->bn", USER, negative).reshape(-1) + 0.5
    expected = F.binary_cross_entropy_with_logits(
        torch.cat([pos, neg]), torch.tensor([1.0, 1, 1, 0, 0, 0])
    )
    assert loss.item() == pytest.approx(expected.item())


def test_follow_index_pairs_match_brute_force():
    users = torch.tensor([0, 0, 1, 3, 3, 3])
    accounts = torch.tensor([1, 2, 0, 4, 1, 0])
    index = FollowIndex(users, accounts, 5)
    batch_users = torch.tensor([3, 0, 2, 3])
    candidates = torch.tensor([1, 4, 1, 0])  # account 1 in two columns
    follows = set(zip(users.tolist(), accounts.tolist()))
    expected = {
        (i, j)
        for i, u in enumerate(batch_users.tolist())
        for j, c in enumerate(candidates.tolist())
        if (u, c) in follows
    }
    for _ in range(2):  # the reused account -> column table is left clean
        rows, cols = index.pairs(batch_users, CandidateColumns(candidates))
        assert len(rows) == len(expected)
        assert set(zip(rows.tolist(), cols.tolist())) == expected
    rows, cols = index.pairs(torch.tensor([1]), CandidateColumns(torch.tensor([2, 4])))
    assert len(rows) == 0
    dense = index.csr().toarray().astype(bool)
    assert dense.tolist() == [[(u, a) in follows for a in range(5)] for u in range(5)]


def test_sampling_log_q_mixes_batch_and_sampled_probabilities():
    counts = torch.tensor([3, 1, 0])
    uniform = torch.full((3,), 1 / 3)
    out = sampling_log_q(counts, batch_size=4, extra=3, uniform_p=uniform)
    assert out.tolist() == pytest.approx(
        [math.log(4 * 0.75 + 1), math.log(4 * 0.25 + 1), math.log(1)], abs=1e-5
    )
