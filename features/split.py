"""Train/holdout splits: temporal when follows carry times, else a seeded per-user holdout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from followrec.core.config import SplitConfig
from followrec.core.errors import InputError
from followrec.core.search import sorted_unique
from followrec.features.contract import Dataset


@dataclass
class Split:
    """Training follows (the only input to features and models) and the holdout to score."""

    kind: str
    train: pd.DataFrame
    holdout: pd.DataFrame
    train_engagements: pd.DataFrame | None
    train_follow_count: np.ndarray  # per account
    cold_start: np.ndarray  # per account: few training follows
    cutoff: pd.Timestamp | None

    def eval_users(self) -> np.ndarray:
        """Users with at least one holdout follow, sorted."""
        return sorted_unique(self.holdout["follower_id"].to_numpy())

    def summary(self) -> dict[str, Any]:
        """Counts for the report."""
        users = self.eval_users()
        return {
            "kind": self.kind,
            "cutoff": None if self.cutoff is None else str(self.cutoff),
            "train_follows": int(len(self.train)),
            "holdout_follows": int(len(self.holdout)),
            "eval_users": int(len(users)),
            "cold_start_eval_users": int(self.cold_start[users].sum()),
        }


def per_user_holdout(follows: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    """Boolean mask: a seeded `holdout_fraction` of each user's follows (at least one)."""
    user = follows["follower_id"].to_numpy()
    rng = np.random.default_rng(cfg.seed)
    order = np.lexsort((rng.random(len(user)), user))
    sorted_user = user[order]
    starts = np.flatnonzero(np.r_[True, sorted_user[1:] != sorted_user[:-1]])
    counts = np.diff(np.r_[starts, len(user)])
    rank = np.arange(len(user)) - np.repeat(starts, counts)
    n_hold = np.where(
        counts >= cfg.min_user_follows, np.maximum(1, np.rint(counts * cfg.holdout_fraction)), 0
    ).astype(np.int64)
    mask = np.zeros(len(user), dtype=bool)
    mask[order] = rank < np.repeat(n_hold, counts)
    return mask


def split_dataset(ds: Dataset, cfg: SplitConfig) -> Split:
    """Split follows; engagements are cut the same way so no holdout signal leaks."""
    if not 0 < cfg.holdout_fraction < 1:
        raise InputError(
            "must be between 0 and 1", field="split.holdout_fraction", value=cfg.holdout_fraction
        )
    follows = ds.follows
    engagements = ds.engagements
    cutoff = None
    if ds.has_timestamps():
        kind = "temporal"
        ts = follows["event_timestamp"]
        cutoff = ts.quantile(1 - cfg.holdout_fraction)
        hold = (ts > cutoff).to_numpy()
        # Only users already on the platform at the cutoff can be scored.
        known = np.zeros(ds.n_accounts, dtype=bool)
        known[follows.loc[~hold, "follower_id"].to_numpy()] = True
        known[follows.loc[~hold, "followee_id"].to_numpy()] = True
        train_eng = None
        if engagements is not None:
            train_eng = engagements[engagements["event_timestamp"] <= cutoff]
        holdout = follows[hold & known[follows["follower_id"].to_numpy()]]
    else:
        kind = "random_per_user"
        hold = per_user_holdout(follows, cfg)
        holdout = follows[hold]
        train_eng = None
        if engagements is not None:
            n = np.int64(ds.n_accounts)
            held = holdout["follower_id"].to_numpy() * n + holdout["followee_id"].to_numpy()
            pair = engagements["user_id"].to_numpy() * n + engagements["account_id"].to_numpy()
            train_eng = engagements[~np.isin(pair, held)]
    train = follows[~hold]
    if len(train) == 0:
        raise InputError("no training follows left after the split", field="split")
    counts = np.bincount(train["follower_id"].to_numpy(), minlength=ds.n_accounts)
    return Split(
        kind=kind,
        train=train.reset_index(drop=True),
        holdout=holdout.reset_index(drop=True),
        train_engagements=None if train_eng is None else train_eng.reset_index(drop=True),
        train_follow_count=counts,
        cold_start=counts <= cfg.cold_start_max_follows,
        cutoff=cutoff,
    )
