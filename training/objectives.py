"""Training objectives: they take tower outputs and return a loss.

- in-batch sampled softmax with logQ popularity correction (Yi et al., RecSys 2019),
  optionally mixed with sampled negatives (Yang et al., WWW 2020); in-batch items the user
  actually follows, and repeats of the positive, are masked out of the softmax;
- pointwise logistic loss on (positive, random negative) pairs, the case study's baseline.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from followrec.training.data import Bag


class FollowIndex:
    """Each user's training follows as CSR tensors, for masking without per-row Python."""

    def __init__(self, users: torch.Tensor, accounts: torch.Tensor, n_accounts: int) -> None:
        self.n = n_accounts
        order = torch.argsort(users.long() * n_accounts + accounts.long())
        self.accounts = accounts.long()[order]
        counts = torch.bincount(users.long(), minlength=n_accounts)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
        self._slot: torch.Tensor | None = None  # account -> candidate column, -1 elsewhere

    def rows(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row index into `users`, followed account) for every follow of the given users."""
        accounts, _, segment = Bag(self.accounts, self.offsets).gather(users)
        return segment, accounts

    def csr(self) -> sp.csr_matrix:
        """The follows as a users x accounts SciPy CSR matrix."""
        data = np.ones(len(self.accounts), dtype=np.int8)
        return sp.csr_matrix(
            (data, self.accounts.numpy(), self.offsets.numpy()), shape=(self.n, self.n)
        )

    def pairs(
        self, users: torch.Tensor, columns: CandidateColumns
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(i, j) index pairs where users[i] follows the candidate in column j: the few cells
        of a (users x candidates) matrix to mask, without building it."""
        segment, followed = self.rows(users)
        if self._slot is None:  # reused: filling an n-sized table every step costs more
            self._slot = torch.full((self.n,), -1, dtype=torch.long)
        self._slot[columns.unique] = torch.arange(len(columns.unique))
        distinct = self._slot.index_select(0, followed)
        self._slot[columns.unique] = -1
        hit = distinct >= 0
        return columns.expand(segment[hit], distinct[hit])


class CandidateColumns:
    """A batch's candidate ids: the distinct ids (sorted) and the columns holding each."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.unique, inverse, self.counts = torch.unique(
            ids, return_inverse=True, return_counts=True
        )
        self.order = torch.argsort(inverse, stable=True)  # columns grouped by distinct id
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def expand(
        self, rows: torch.Tensor, distinct: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, distinct-id index) pairs -> (row, column) for every column with that id."""
        repeats = self.counts[distinct]
        pair = torch.repeat_interleave(torch.arange(len(distinct)), repeats)
        within = torch.arange(len(pair)) - (torch.cumsum(repeats, 0) - repeats)[pair]
        return rows[pair], self.order[self.starts[distinct][pair] + within]


def in_batch_softmax(
    user: torch.Tensor,
    item: torch.Tensor,
    user_ids: torch.Tensor,
    item_ids: torch.Tensor,
    inv_temperature: torch.Tensor,
    log_q: torch.Tensor | None,
    follows: FollowIndex | None,
    extra_item: torch.Tensor | None = None,
    extra_ids: torch.Tensor | None = None,
    extra_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean softmax cross-entropy of each user's positive against the batch's other items
    (and optional extra sampled items). `log_q` is the log sampling probability of each
    in-batch item (logQ correction); masked logits never count as negatives."""
    candidates, cand_ids, cand_log_q = item, item_ids, log_q
    if extra_item is not None:
        candidates = torch.cat([item, extra_item])
        cand_ids = torch.cat([item_ids, extra_ids])
        if log_q is not None:
            cand_log_q = torch.cat([log_q, extra_log_q])
    # Temperature on the (batch x dim) side and logQ as addmm's bias: three fewer passes
    # over the (batch x candidates) logits, forward and backward.
    scaled = user * inv_temperature
    if cand_log_q is not None:
        logits = torch.addmm(cand_log_q.neg().unsqueeze(0), scaled, candidates.T)
    else:
        logits = scaled @ candidates.T
    batch = len(user)
    positive = torch.arange(batch)
    # Masked cells are few (repeats of the positive, followed accounts): set them by index
    # rather than through (batch x candidates) boolean matrices.
    columns = CandidateColumns(cand_ids)
    rows, cols = columns.expand(positive, torch.searchsorted(columns.unique, item_ids))
    if follows is not None:
        follow_rows, follow_cols = follows.pairs(user_ids, columns)
        rows, cols = torch.cat([rows, follow_rows]), torch.cat([cols, follow_cols])
    off_diagonal = rows != cols
    # In place: the matmul's backward does not need its output.
    logits.index_put_((rows[off_diagonal], cols[off_diagonal]), logits.new_tensor(float("-inf")))
    return F.cross_entropy(logits, positive)


def pointwise_logistic(
    user: torch.Tensor,
    item: torch.Tensor,
    negative: torch.Tensor,
    inv_temperature: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """Binary cross-entropy: followed pairs -> 1, (user, random account) pairs -> 0.
    `negative` is (batch x negatives x dim)."""
    pos = (user * item).sum(1) * inv_temperature + bias
    neg = torch.einsum("bd,bnd->bn", user, negative) * inv_temperature + bias
    return F.binary_cross_entropy_with_logits(
        torch.cat([pos, neg.reshape(-1)]),
        torch.cat([torch.ones_like(pos), torch.zeros(neg.numel())]),
    )


def sampling_log_q(
    counts: torch.Tensor, batch_size: int, extra: int, uniform_p: torch.Tensor
) -> torch.Tensor:
    """log of each account's expected count among a batch's candidates: batch positives
    are drawn by follower count, extra negatives from `uniform_p`."""
    p_pos = counts.double() / counts.sum()
    return torch.log(batch_size * p_pos + extra * uniform_p.double() + 1e-12).float()
