"""Consumer and producer feature tables: vectorised pandas/numpy/scipy, used unchanged
offline (training, evaluation), by Feast and by serving."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from followrec.core.config import FeatureConfig
from followrec.core.search import sorted_unique
from followrec.features.bags import bag_to_csr, csr_to_bag, group_to_bag
from followrec.features.graph import row_top_k, spectral_embedding, truncated_rows, two_hop_bags

UNKNOWN = "<unk>"
ACTIVITY_EDGES = (0, 1, 3, 6, 21, 101)  # activity buckets: 0, 1-2, 3-5, 6-20, 21-100, 101+
ACTIVITY_LABELS = ("0", "1-2", "3-5", "6-20", "21-100", "101+")
MAX_COUNT_BUCKET = 15
# Integer-coded categoricals whose range is fixed by the transform, not by the data.
FIXED_CARDINALITY = {"follow_count_bucket": MAX_COUNT_BUCKET + 1}


@dataclass
class FeatureTables:
    """Feature tables keyed by account id (every account is both a user and a producer)."""

    consumer: pd.DataFrame
    producer: pd.DataFrame
    vocabularies: dict[str, list[str]] = field(default_factory=dict)
    feature_timestamp: pd.Timestamp | None = None


def fit_vocabulary(values: pd.Series) -> list[str]:
    """Sorted distinct values, with index 0 reserved for unknown/missing."""
    seen = sorted({str(v) for v in values.dropna().unique()})
    return [UNKNOWN, *seen]


def encode(values: pd.Series, vocab: list[str]) -> np.ndarray:
    """Map values to vocabulary codes; unseen and missing map to 0."""
    index = pd.Index(vocab)
    codes = index.get_indexer(values.astype(object).where(values.notna(), UNKNOWN).astype(str))
    return np.where(codes < 0, 0, codes).astype(np.int64)


def activity_bucket(counts: np.ndarray) -> np.ndarray:
    """Follow-count bucket index (see ACTIVITY_LABELS)."""
    return np.searchsorted(np.asarray(ACTIVITY_EDGES[1:]), counts, side="right").astype(np.int64)


def follow_count_bucket(counts: np.ndarray) -> np.ndarray:
    """log2 bucket of a follow count, capped at MAX_COUNT_BUCKET."""
    buckets = np.floor(np.log2(np.asarray(counts) + 1))
    return np.minimum(buckets, MAX_COUNT_BUCKET).astype(np.int64)


def follow_matrix(follows: pd.DataFrame, n: int) -> sp.csr_matrix:
    """Binary (follower x followee) CSR matrix with sorted column indices."""
    rows = follows["follower_id"].to_numpy()
    cols = follows["followee_id"].to_numpy()
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def apply_user_event(
    row: pd.DataFrame, kind: str, account: int, engagement: str | None, cfg: FeatureConfig
) -> None:
    """Update one user's consumer row (in place) for a new follow, unfollow or engagement,
    as build_features would after that event: the account moves to the front of the
    history bags (most recent first), counts and the activity bucket follow."""
    follows = [a for a in row.at[0, "follows"] if a != account]
    recent = [a for a in row.at[0, "recent_follows"] if a != account]
    was_following = len(follows) != len(row.at[0, "follows"])
    if kind == "follow":
        follows, recent = [account, *follows], [account, *recent]
        if not was_following:
            row.at[0, "follow_count"] = int(row.at[0, "follow_count"]) + 1
    elif kind == "unfollow" and was_following:
        row.at[0, "follow_count"] = max(int(row.at[0, "follow_count"]) - 1, 0)
    elif kind == "engagement":
        follows, recent = list(row.at[0, "follows"]), list(row.at[0, "recent_follows"])
        if "engagement_count" in row:
            row.at[0, "engagement_count"] = int(row.at[0, "engagement_count"]) + 1
        column = f"engagement_{engagement}_count"
        if engagement and column in row:
            row.at[0, column] = int(row.at[0, column]) + 1
    row.at[0, "follows"] = follows[: cfg.max_history]
    row.at[0, "recent_follows"] = recent[: cfg.recent_follows]
    count = int(row.at[0, "follow_count"])
    row.at[0, "follow_count_bucket"] = int(follow_count_bucket(np.array([count]))[0])


def _history_bags(follows: pd.DataFrame, n: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Most recent first (ties by account id), at most `limit` per user."""
    user = follows["follower_id"].to_numpy()
    ts = follows["event_timestamp"]
    ts_key = (
        np.zeros(len(user), dtype=np.int64)
        if ts.isna().all()
        else (ts.fillna(pd.Timestamp(0, tz="UTC")).astype("int64").to_numpy())
    )
    order = np.lexsort((follows["followee_id"].to_numpy(), -ts_key, user))
    sorted_user = user[order]
    counts = np.bincount(user, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
    rank = np.arange(len(user)) - starts[sorted_user]
    keep = rank < limit
    kept_counts = np.minimum(counts, limit)
    indptr = np.concatenate([[0], np.cumsum(kept_counts)])
    return indptr, follows["followee_id"].to_numpy()[order][keep]


def build_features(
    accounts: pd.DataFrame,
    train_follows: pd.DataFrame,
    train_engagements: pd.DataFrame | None,
    cfg: FeatureConfig,
    feature_kinds: dict[str, str] | None = None,
) -> FeatureTables:
    """Consumer and producer tables from followrec.training follows only (never the holdout)."""
    n = len(accounts)
    ts = train_follows["event_timestamp"]
    if cfg.reference_time is not None:
        reference = pd.Timestamp(cfg.reference_time, tz="UTC")
    elif ts.notna().any():
        reference = ts.max()
    else:
        created = accounts["created_at"].dropna()
        reference = created.max() if len(created) else pd.Timestamp("1970-01-01", tz="UTC")
    vocab = {
        "language": fit_vocabulary(accounts["language"]),
        "country": fit_vocabulary(accounts["country"]),
    }
    lang = encode(accounts["language"], vocab["language"])
    country = encode(accounts["country"], vocab["country"])

    follow_m = follow_matrix(train_follows, n)
    follow_count = np.asarray(follow_m.sum(axis=1)).ravel().astype(np.int64)
    follower_count = np.asarray(follow_m.sum(axis=0)).ravel().astype(np.int64)
    hist_ptr, hist_ids = _history_bags(train_follows, n, cfg.max_history)
    recent_ptr, recent_ids = _history_bags(train_follows, n, cfg.recent_follows)

    consumer = pd.DataFrame(
        {
            "user_id": accounts["account_id"].to_numpy(),
            "language": lang,
            "country": country,
            "topics": accounts["topics"].to_numpy(),
            "follow_count": follow_count,
            "follow_count_bucket": follow_count_bucket(follow_count),
            "recent_follows": csr_to_bag(recent_ptr, recent_ids).to_numpy(),
            "follows": csr_to_bag(hist_ptr, hist_ids).to_numpy(),
        }
    )
    consumer = consumer.join(_engagement_stats(train_engagements, n))

    # Producer: aggregate follower traits through the (follower x account) matrix.
    followers_of = follow_m.T.tocsr()  # account x follower
    lang_onehot = sp.csr_matrix(
        (np.ones(n), (np.arange(n), lang)), shape=(n, len(vocab["language"]))
    )
    country_onehot = sp.csr_matrix(
        (np.ones(n), (np.arange(n), country)), shape=(n, len(vocab["country"]))
    )
    denom = np.maximum(follower_count, 1)[:, None]
    lang_dist = (followers_of @ lang_onehot).toarray() / denom
    country_dist = (followers_of @ country_onehot).toarray() / denom
    t_ptr, t_val = bag_to_csr(accounts["topics"])
    n_topics = int(t_val.max()) + 1 if len(t_val) else 1
    topic_m = sp.csr_matrix(
        (np.ones(len(t_val), dtype=np.float32), t_val, t_ptr), shape=(n, n_topics)
    )
    top_ptr, top_ids = row_top_k(followers_of @ topic_m, cfg.follower_top_topics)
    created = accounts["created_at"]
    age_days = ((reference - created).dt.total_seconds() / 86400.0).fillna(0.0).clip(lower=0)
    producer = pd.DataFrame(
        {
            "account_id": accounts["account_id"].to_numpy(),
            "language": lang,
            "country": country,
            "topics": accounts["topics"].to_numpy(),
            "follower_count": follower_count,
            "log_follower_count": np.log1p(follower_count).astype(np.float32),
            "account_age_days": age_days.to_numpy(dtype=np.float32),
            "follower_language_dist": list(lang_dist.astype(np.float32)),
            "follower_country_dist": list(country_dist.astype(np.float32)),
            "follower_countries": (country_dist > 0).sum(axis=1).astype(np.int64),
            "follower_same_language_share": lang_dist[np.arange(n), lang].astype(np.float32),
            "follower_top_topics": csr_to_bag(top_ptr, top_ids).to_numpy(),
        }
    )
    _add_graph_features(consumer, producer, train_follows, follow_m, hist_ptr, hist_ids, cfg)
    add_account_attributes(accounts, feature_kinds or {}, vocab, (consumer, producer))
    return FeatureTables(
        consumer=consumer, producer=producer, vocabularies=vocab, feature_timestamp=reference
    )


def add_account_attributes(
    accounts: pd.DataFrame,
    feature_kinds: dict[str, str],
    vocab: dict[str, list[str]],
    tables: tuple[pd.DataFrame, ...],
) -> None:
    """Every extra account column (a `--nodes` attribute) into both tables: an account's
    attribute describes it as a user and as a producer. Text categoricals are coded with
    a fitted vocabulary (0 = unknown), numbers stay numbers, lists stay id bags."""
    for col, kind in feature_kinds.items():
        if col not in accounts.columns or any(col in t.columns for t in tables):
            continue
        values = accounts[col]
        if kind == "categorical":
            vocab[col] = fit_vocabulary(values)
            values = pd.Series(encode(values, vocab[col]), index=values.index)
        for table in tables:
            table[col] = values.to_numpy()


def _add_graph_features(
    consumer: pd.DataFrame,
    producer: pd.DataFrame,
    train_follows: pd.DataFrame,
    follow_m: sp.csr_matrix,
    hist_ptr: np.ndarray,
    hist_ids: np.ndarray,
    cfg: FeatureConfig,
) -> None:
    """The optional graph features (off by default: see README, "Graph features"), each
    a column only when its size setting is above 0."""
    n = follow_m.shape[0]
    if cfg.followers > 0:
        reversed_follows = train_follows.rename(
            columns={"follower_id": "followee_id", "followee_id": "follower_id"}
        )
        ptr, ids = _history_bags(reversed_follows, n, cfg.followers)
        producer["followers"] = csr_to_bag(ptr, ids).to_numpy()
    if cfg.two_hop > 0:
        fanout = truncated_rows(hist_ptr, hist_ids, cfg.two_hop_fanout, n)
        ptr, ids = two_hop_bags(fanout, cfg.two_hop)
        consumer["two_hop"] = csr_to_bag(ptr, ids).to_numpy()
    if cfg.graph_embedding_dim > 0:
        rows, cols = spectral_embedding(follow_m, cfg.graph_embedding_dim, seed=0)
        consumer["follows_svd"] = list(rows)
        producer["followers_svd"] = list(cols)


def _engagement_stats(engagements: pd.DataFrame | None, n: int) -> pd.DataFrame:
    if engagements is None or len(engagements) == 0:
        return pd.DataFrame(
            {
                "engagement_count": np.zeros(n, dtype=np.int64),
                "engaged_accounts": np.zeros(n, dtype=np.int64),
            }
        )
    user = engagements["user_id"].to_numpy()
    out = {"engagement_count": np.bincount(user, minlength=n).astype(np.int64)}
    pairs = sorted_unique(user * np.int64(n) + engagements["account_id"].to_numpy())
    out["engaged_accounts"] = np.bincount(pairs // n, minlength=n).astype(np.int64)
    kinds = engagements["kind"].astype(str)
    for kind in sorted(kinds.unique()):
        mask = (kinds == kind).to_numpy()
        out[f"engagement_{kind}_count"] = np.bincount(user[mask], minlength=n).astype(np.int64)
    return pd.DataFrame(out)


def group_bag(owner: np.ndarray, items: np.ndarray, n: int) -> pd.Series:
    """Group (owner, item) pairs into a bag column of length n."""
    indptr, values = group_to_bag(owner, items, n)
    return csr_to_bag(indptr, values)
