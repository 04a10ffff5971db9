"""Synthetic social network with ground truth: languages, countries, topics, power-law
popularity, homophily, triadic closure, timestamps and engagements. Reproducible by seed.

Direct follows come from a known mixture (topic -> language -> account by popularity), so
`true_follow_probability` gives every user's real propensity to follow any account; later
work uses it to simulate online experiments."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from followrec.core.config import SyntheticConfig, require
from followrec.core.search import sorted_unique
from followrec.features.bags import csr_to_bag
from followrec.features.contract import Dataset, validate_contract
from followrec.features.loaders import _finish_follows

OWN_TOPIC_SHARE = 0.7  # share of direct follows drawn from the user's own topics
START = pd.Timestamp("2020-01-01", tz="UTC")
SPAN_DAYS = 365
CHUNK = 2_000_000
ENGAGEMENT_KINDS = np.array(["like", "reply", "repost"])


def _zipf(n: int, exponent: float = 1.0) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def _sample_rows(cum: np.ndarray, rows: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw from row `rows[i]` of a row-wise cumulative matrix, vectorised."""
    n_rows, width = cum.shape
    shifted = (cum / cum[:, -1:] + np.arange(n_rows)[:, None]).ravel()
    idx = np.searchsorted(shifted, rows + np.minimum(r, 1 - 1e-12), side="right")
    return np.minimum(idx - rows * width, width - 1)


def _check(cfg: SyntheticConfig) -> None:
    checks = {
        "synthetic.n_accounts": cfg.n_accounts >= 10,
        "synthetic.mean_follows": 1 <= cfg.mean_follows < cfg.n_accounts,
        "synthetic.n_topics": cfg.n_topics >= 1,
        "synthetic.n_languages": cfg.n_languages >= 1,
        "synthetic.countries_per_language": cfg.countries_per_language >= 1,
        "synthetic.homophily": 0 <= cfg.homophily <= 1,
        "synthetic.triadic_share": 0 <= cfg.triadic_share < 1,
        "synthetic.popularity_exponent": cfg.popularity_exponent > 0,
        "synthetic.engagements_per_follow": cfg.engagements_per_follow >= 0,
    }
    require(checks, cfg, "out of range")


def generate(cfg: SyntheticConfig, progress: bool = True) -> Dataset:
    """Generate the accounts, follows and engagements tables plus the ground truth."""
    _check(cfg)
    rng = np.random.default_rng(cfg.seed)
    n, k, n_lang = cfg.n_accounts, cfg.n_topics, cfg.n_languages
    bar = tqdm(total=6, desc="synthetic", disable=not progress, unit="stage")

    # Accounts: language (Zipf), country within language, topics, popularity, age.
    lang_weights = _zipf(n_lang)
    language = rng.choice(n_lang, size=n, p=lang_weights)
    country = language * cfg.countries_per_language + rng.choice(
        cfg.countries_per_language, size=n, p=_zipf(cfg.countries_per_language)
    )
    topic_profile = rng.dirichlet(np.full(k, 0.3), size=n_lang)
    primary = _sample_rows(np.cumsum(topic_profile, axis=1), language, rng.random(n))
    n_extra = rng.integers(0, 4, size=n)
    # Secondary topics sit near the primary one on a ring, so topics form related clusters.
    extra_owner = np.repeat(np.arange(n), n_extra)
    extra = (primary[extra_owner] + rng.integers(-3, 4, size=len(extra_owner))) % k
    owner = np.concatenate([np.arange(n), extra_owner])
    topic_ids = np.concatenate([primary, extra])
    pairs = sorted_unique(owner * np.int64(k) + topic_ids)
    t_owner, t_ids = pairs // k, pairs % k
    t_ptr = np.concatenate([[0], np.cumsum(np.bincount(t_owner, minlength=n))])
    popularity = rng.pareto(cfg.popularity_exponent, size=n) + 1.0
    pop_rank = np.argsort(np.argsort(-popularity)) / n  # 0 = most popular
    # Popular accounts tend to be older.
    age_days = (1 - pop_rank) * 2000 * rng.beta(2, 2, size=n) + 30
    created_at = START - pd.to_timedelta(age_days, unit="D")
    bar.update()

    # Direct-follow sampler: accounts grouped by (language, primary topic), drawn by popularity.
    group = language * k + primary
    by_group = np.argsort(group, kind="stable")
    cum_pop = np.cumsum(popularity[by_group])
    group_end = np.searchsorted(group[by_group], np.arange(n_lang * k), side="right")
    group_start = np.r_[0, group_end[:-1]]
    group_total = np.where(
        group_end > group_start,
        cum_pop[np.maximum(group_end - 1, 0)]
        - np.where(group_start > 0, cum_pop[np.maximum(group_start - 1, 0)], 0),
        0.0,
    )
    by_lang = np.argsort(language, kind="stable")
    cum_pop_lang = np.cumsum(popularity[by_lang])
    lang_end = np.searchsorted(language[by_lang], np.arange(n_lang), side="right")
    lang_start = np.r_[0, lang_end[:-1]]

    degree = np.clip(
        np.rint(rng.lognormal(np.log(cfg.mean_follows) - 0.5, 1.0, size=n)), 1, max(1, n // 10)
    ).astype(np.int64)
    direct = np.maximum(1, np.rint(degree * (1 - cfg.triadic_share))).astype(np.int64)
    triadic = degree - direct
    users = np.repeat(np.arange(n, dtype=np.int64), direct)
    followee = np.empty(len(users), dtype=np.int64)
    lang_cum = np.cumsum(lang_weights)[None, :]
    profile_cum = np.cumsum(topic_profile, axis=1)
    for lo in range(0, len(users), CHUNK):
        u = users[lo : lo + CHUNK]
        m = len(u)
        own = rng.random(m) < OWN_TOPIC_SHARE
        length = np.diff(t_ptr)[u]
        own_topic = t_ids[
            t_ptr[u] + np.minimum((rng.random(m) * length).astype(np.int64), length - 1)
        ]
        profile_topic = _sample_rows(profile_cum, language[u], rng.random(m))
        topic = np.where(own, own_topic, profile_topic)
        stay = rng.random(m) < cfg.homophily
        other_lang = _sample_rows(lang_cum, np.zeros(m, dtype=np.int64), rng.random(m))
        lang = np.where(stay, language[u], other_lang)
        g = lang * k + topic
        r = rng.random(m)
        empty = group_total[g] <= 0
        base = np.where(group_start[g] > 0, cum_pop[np.maximum(group_start[g] - 1, 0)], 0.0)
        pick = by_group[
            np.minimum(np.searchsorted(cum_pop, base + r * group_total[g], side="right"), n - 1)
        ]
        # No account with that (language, topic): fall back to the language by popularity.
        lbase = np.where(
            lang_start[lang] > 0, cum_pop_lang[np.maximum(lang_start[lang] - 1, 0)], 0.0
        )
        ltotal = cum_pop_lang[np.maximum(lang_end[lang] - 1, 0)] - lbase
        lpick = by_lang[
            np.minimum(np.searchsorted(cum_pop_lang, lbase + r * ltotal, side="right"), n - 1)
        ]
        followee[lo : lo + m] = np.where(empty, lpick, pick)
    direct_time = rng.random(len(users)) * SPAN_DAYS
    bar.update()

    # Triadic closure: follow an account that one of your followees follows.
    d_ptr = np.concatenate([[0], np.cumsum(direct)])
    t_users = np.repeat(np.arange(n, dtype=np.int64), triadic)
    via_edge = d_ptr[t_users] + (rng.random(len(t_users)) * direct[t_users]).astype(np.int64)
    via = followee[via_edge]
    second_edge = d_ptr[via] + (rng.random(len(t_users)) * direct[via]).astype(np.int64)
    closing = followee[second_edge]
    closing_time = np.maximum(direct_time[via_edge], direct_time[second_edge]) + rng.exponential(
        14.0, size=len(t_users)
    )
    bar.update()

    src = np.concatenate([users, t_users])
    dst = np.concatenate([followee, closing])
    days = np.concatenate([direct_time, closing_time])
    seconds = START.timestamp() + days * 86400.0
    follows, report = _finish_follows(src, dst, seconds, undirected=False)
    report["triadic_follows_drawn"] = int(len(t_users))
    bar.update()

    # Engagements: mostly with followed accounts, some with accounts not (yet) followed.
    n_eng = int(round(cfg.engagements_per_follow * len(follows)))
    on_follow = rng.random(n_eng) < 0.8
    edge = rng.integers(0, len(follows), size=n_eng)
    eng_user = follows["follower_id"].to_numpy()[edge]
    eng_account = np.where(
        on_follow,
        follows["followee_id"].to_numpy()[edge],
        rng.choice(n, size=n_eng, p=popularity / popularity.sum()),
    )
    follow_ns = follows["event_timestamp"].astype("int64").to_numpy()
    eng_time = follow_ns[edge] + (rng.exponential(7.0, size=n_eng) * 86400e9).astype(np.int64)
    keep = eng_user != eng_account
    engagements = pd.DataFrame(
        {
            "user_id": eng_user[keep],
            "account_id": eng_account[keep],
            "kind": ENGAGEMENT_KINDS[rng.choice(3, size=int(keep.sum()), p=[0.7, 0.2, 0.1])],
            "event_timestamp": pd.to_datetime(eng_time[keep], utc=True),
        }
    )
    bar.update()

    width = len(str(n))
    accounts = pd.DataFrame(
        {
            "account_id": np.arange(n, dtype=np.int64),
            "external_id": pd.Series(np.arange(n)).map(lambda i: f"acct{i:0{width}d}").to_numpy(),
            "created_at": created_at,
            "language": np.char.add("lang", language.astype(str)).astype(object),
            "country": np.char.add("c", country.astype(str)).astype(object),
            "topics": csr_to_bag(t_ptr, t_ids).to_numpy(),
            "popularity": popularity,
        }
    )
    truth = {
        "language": language,
        "primary_topic": primary,
        "popularity": popularity,
        "topic_profile": topic_profile,
        "language_weights": lang_weights,
        "group_total": group_total.reshape(n_lang, k),
        "topic_keys": pairs,
        "homophily": np.array(cfg.homophily),
        "own_topic_share": np.array(OWN_TOPIC_SHARE),
        "target_degree": degree,
    }
    ds = Dataset(
        name=f"synthetic-{n}",
        accounts=accounts,
        follows=follows,
        engagements=engagements,
        load_report=report,
        feature_kinds={"popularity": "dense"},
        truth=truth,
    )
    validate_contract(ds, "synthetic")
    bar.update()
    bar.close()
    return ds


def true_follow_probability(
    truth: dict[str, np.ndarray], users: np.ndarray, accounts: np.ndarray
) -> np.ndarray:
    """P(a direct follow of user u lands on account v), the generator's own mixture,
    for aligned arrays of users and accounts."""
    users = np.asarray(users)
    accounts = np.asarray(accounts)
    lang_u = truth["language"][users]
    lang_v = truth["language"][accounts]
    topic_v = truth["primary_topic"][accounts]
    n_topics = truth["topic_profile"].shape[1]
    keys = truth["topic_keys"]  # sorted user * n_topics + topic
    in_bag = np.isin(users * np.int64(n_topics) + topic_v, keys)
    length = np.bincount(keys // n_topics, minlength=len(truth["language"]))[users]
    share = float(truth["own_topic_share"])
    p_topic = share * in_bag / length + (1 - share) * truth["topic_profile"][lang_u, topic_v]
    h = float(truth["homophily"])
    p_lang = h * (lang_u == lang_v) + (1 - h) * truth["language_weights"][lang_v]
    total = truth["group_total"][lang_v, topic_v]
    return p_topic * p_lang * truth["popularity"][accounts] / np.maximum(total, 1e-12)
