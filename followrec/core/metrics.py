"""Top-K retrieval metrics, vectorised over users.

Recommendations are an int array (users x K_max), best first, padded with -1. The relevant
set of each user is their holdout follows. Definitions:
  recall@K    = hits in top K / |relevant|
  precision@K = hits in top K / K
  MAP@K       = sum_i P@i * rel_i / min(|relevant|, K)
  NDCG@K      = sum_i rel_i / log2(i + 1) / IDCG, IDCG over min(|relevant|, K) hits
  hit_rate@K  = 1 if any hit in top K
  coverage@K  = distinct recommended accounts / catalog size
  popularity_percentile@K = mean training-popularity percentile of recommended accounts
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from followrec.core.search import in_sorted, sorted_unique

PER_USER = ("recall", "precision", "map", "ndcg", "hit_rate")


@dataclass
class Relevance:
    """Holdout follows of the evaluated users, as a hit matrix builder."""

    users: np.ndarray  # sorted user ids
    n_relevant: np.ndarray  # per user
    keys: np.ndarray  # sorted user * n_accounts + account
    n_accounts: int

    @classmethod
    def from_holdout(cls, holdout: pd.DataFrame, users: np.ndarray, n_accounts: int) -> Relevance:
        """Relevant sets for `users` (sorted) from holdout follow rows."""
        hu = holdout["follower_id"].to_numpy()
        hv = holdout["followee_id"].to_numpy()
        mask = np.isin(hu, users)
        keys = sorted_unique(hu[mask] * np.int64(n_accounts) + hv[mask])
        counts = np.bincount(keys // n_accounts, minlength=n_accounts)[users]
        return cls(users=users, n_relevant=counts, keys=keys, n_accounts=n_accounts)

    def hits(self, recs: np.ndarray) -> np.ndarray:
        """Boolean (users x K) matrix: recs[i, j] is a holdout follow of users[i]."""
        valid = recs >= 0
        flat = self.users[:, None] * np.int64(self.n_accounts) + np.where(valid, recs, 0)
        return valid & in_sorted(self.keys, flat)


def per_user_metrics(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Each per-user metric at K, one value per user (users with no relevant items -> 0)."""
    h = hits[:, :k].astype(np.float64)
    if h.shape[1] < k:  # fewer candidates than K count as misses
        h = np.pad(h, ((0, 0), (0, k - h.shape[1])))
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    safe = np.maximum(n_rel, 1)
    n_hits = h.sum(axis=1)
    ranks = np.arange(1, k + 1)
    precision_at_i = np.cumsum(h, axis=1) / ranks
    discounts = 1.0 / np.log2(ranks + 1)
    ideal = np.cumsum(discounts)[np.minimum(n_rel, k).astype(np.int64) - 1]
    has_rel = n_rel > 0
    return {
        "recall": np.where(has_rel, n_hits / safe, 0.0),
        "precision": n_hits / k,
        "map": np.where(has_rel, (precision_at_i * h).sum(axis=1) / np.minimum(safe, k), 0.0),
        "ndcg": np.where(has_rel, (h * discounts).sum(axis=1) / np.where(has_rel, ideal, 1), 0.0),
        "hit_rate": (n_hits > 0).astype(np.float64),
    }


def mean_recall(
    recs: np.ndarray,
    users: np.ndarray,
    holdout: pd.DataFrame,
    n_accounts: int,
    k: int | None = None,
) -> float:
    """Mean Recall@k (default: all of recs) of `users` (sorted) against holdout rows."""
    relevance = Relevance.from_holdout(holdout, users, n_accounts)
    k = recs.shape[1] if k is None else k
    return float(per_user_metrics(relevance.hits(recs), relevance.n_relevant, k)["recall"].mean())


def popularity_percentile(popularity: np.ndarray) -> np.ndarray:
    """Per account, the share of accounts strictly less popular (0 = least, ~1 = most)."""
    order = np.sort(popularity)
    return np.searchsorted(order, popularity, side="left") / max(len(popularity) - 1, 1)


def catalog_metrics(
    recs: np.ndarray, ks: tuple[int, ...], percentile: np.ndarray
) -> dict[int, dict[str, float]]:
    """Coverage and mean popularity percentile of the top K, for each K: one pass over the
    columns (a seen-mark per account, not a distinct-count per K)."""
    seen = np.zeros(len(percentile), dtype=bool)
    total, count, done = 0.0, 0, 0
    out = {}
    for k in sorted(ks):
        block = recs[:, done:k]
        valid = block[block >= 0]
        seen[valid] = True
        total += float(percentile[valid].sum())
        count += len(valid)
        done = max(done, k)
        out[k] = {
            "coverage": float(np.count_nonzero(seen)) / len(percentile),
            "popularity_percentile": total / count if count else 0.0,
        }
    return out


def evaluate_recommendations(
    recs: np.ndarray,
    relevance: Relevance,
    ks: tuple[int, ...],
    percentile: np.ndarray,
    groups: dict[str, np.ndarray] | None = None,
) -> dict[str, object]:
    """All metrics at every K, overall and per group (group -> boolean mask over users)."""
    hits = relevance.hits(recs)
    per_k = {k: per_user_metrics(hits, relevance.n_relevant, k) for k in ks}

    def summarise(mask: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {"users": int(mask.sum())}
        catalog = catalog_metrics(recs[mask], ks, percentile)
        for k in ks:
            for name in PER_USER:
                values = per_k[k][name][mask]
                out[f"{name}@{k}"] = float(values.mean()) if len(values) else 0.0
            for name, value in catalog[k].items():
                out[f"{name}@{k}"] = value
        return out

    result: dict[str, object] = summarise(np.ones(len(relevance.users), dtype=bool))
    result["groups"] = {
        name: summarise(mask) for name, mask in (groups or {}).items() if mask.any()
    }
    return result


def exposure_disparity(
    recs: np.ndarray, k: int, account_group: np.ndarray, followed: np.ndarray
) -> dict[str, dict[str, float]]:
    """Per account group: its share of the top-k recommendation slots (exposure) against
    its share of the follows accounts actually received (`followed`: followee ids), and
    their ratio (1 = exposed in proportion; 0.5 = half the exposure its follows earn).
    `account_group` holds each account's group label; -1 slots are ignored."""
    top = recs[:, :k]
    shown = account_group[top[top >= 0]]
    received = account_group[np.asarray(followed, dtype=np.int64)]
    out: dict[str, dict[str, float]] = {}
    for label in sorted({str(g) for g in np.unique(account_group)}):
        exposure = float(np.mean(shown.astype(str) == label)) if len(shown) else 0.0
        follow = float(np.mean(received.astype(str) == label)) if len(received) else 0.0
        out[label] = {
            "exposure_share": exposure,
            "follow_share": follow,
            "disparity_ratio": exposure / follow if follow > 0 else float("nan"),
        }
    return out


def max_disparity(groups: dict[str, dict[str, float]], min_follow_share: float = 0.01) -> float:
    """The worst over-or-under exposure, max(ratio, 1/ratio), over groups receiving at least
    `min_follow_share` of follows (smaller groups are too noisy to gate on); 1e9 stands for
    a group never shown."""
    worst = 1.0
    for values in groups.values():
        if values["follow_share"] >= min_follow_share:
            ratio = values["disparity_ratio"]
            worst = max(worst, ratio, 1.0 / ratio if ratio > 0 else 1e9)
    return worst
