"""Online experiment analysis: attribute follows to the impressions that showed them, sum
per user and arm, and compare arms with delta-method intervals (users are the unit of
randomisation, so ratio metrics are ratios of per-user sums), a sample-ratio-mismatch check
and a warning when a result is read before its planned size.

Also the legacy control: the narrow-source blend for every user, precomputed once as a
table the service serves from (what the platform ran before the model)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from followrec.core.atomic import atomic_file
from followrec.core.config import Config
from followrec.evaluation.exposures import Experiment, ExperimentStore

BLEND_FILE = "blend.npy"
METRICS = ("follow_through_rate", "follows_per_user", "retention")
GUARDRAILS = ("follow_through_rate", "retention")


# ---------------------------------------------------------------- attribution


def attribute(
    impressions: pd.DataFrame,
    events: pd.DataFrame,
    attribution_hours: float,
    retention_days: float,
    experiment: str | None = None,
) -> pd.DataFrame:
    """Per (user, arm): impressions (accounts shown), follows attributed to them, follows
    still kept `retention_days` later. A follow counts for the latest impression of that
    account to that user within `attribution_hours` before it, once. With `experiment`,
    `impressions` may hold other experiments' too: a follow whose latest impression
    belongs to another experiment is not this one's."""
    mine = impressions
    if experiment is not None:
        mine = impressions[impressions["experiment"] == experiment]
    units = mine.groupby(["user_id", "arm"], sort=True).size().rename("impressions").reset_index()
    units["follows"] = 0
    units["retained"] = 0
    follows = events[events["type"] == "follow"]
    if mine.empty or follows.empty:
        return units
    columns = ["user_id", "account_id", "ts", "arm"]
    if experiment is not None:
        columns.append("experiment")
    shown = impressions[columns].sort_values("ts")
    follows = follows[["user_id", "account_id", "ts"]].sort_values("ts")
    attributed = pd.merge_asof(
        follows.rename(columns={"ts": "follow_ts"}),
        shown.rename(columns={"ts": "shown_ts"}),
        left_on="follow_ts",
        right_on="shown_ts",
        by=["user_id", "account_id"],
        direction="backward",
        tolerance=pd.Timedelta(hours=attribution_hours),
    ).dropna(subset=["arm"])
    if experiment is not None:
        attributed = attributed[attributed["experiment"] == experiment]
    # One follow per shown account and user (a re-follow after an unfollow is not a new win).
    attributed = attributed.drop_duplicates(["user_id", "account_id", "shown_ts"])
    unfollows = events[events["type"] == "unfollow"][["user_id", "account_id", "ts"]]
    if attributed.empty:
        return units
    attributed = attributed.sort_values("follow_ts")
    undone = pd.merge_asof(
        attributed,
        unfollows.rename(columns={"ts": "unfollow_ts"}).sort_values("unfollow_ts"),
        left_on="follow_ts",
        right_on="unfollow_ts",
        by=["user_id", "account_id"],
        direction="forward",
        tolerance=pd.Timedelta(days=retention_days),
    )
    undone["kept"] = undone["unfollow_ts"].isna()
    per_unit = undone.groupby(["user_id", "arm"]).agg(
        follows=("account_id", "size"), retained=("kept", "sum")
    )
    units = units.drop(columns=["follows", "retained"]).merge(
        per_unit.reset_index(), on=["user_id", "arm"], how="left"
    )
    units[["follows", "retained"]] = units[["follows", "retained"]].fillna(0).astype("int64")
    units.attrs["followed_accounts"] = undone[["arm", "account_id"]]
    return units


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Estimate:
    """A metric of one arm: its value and the variance of that value."""

    value: float
    variance: float
    n: int


def ratio_estimate(numerator: np.ndarray, denominator: np.ndarray) -> Estimate:
    """Σy / Σx over users, with the delta-method variance
    (s_y² − 2R·s_xy + R²·s_x²) / (n · x̄²)."""
    y = np.asarray(numerator, dtype=np.float64)
    x = np.asarray(denominator, dtype=np.float64)
    n = len(x)
    if n < 2 or x.sum() == 0:
        return Estimate(float("nan"), float("nan"), n)
    r = y.sum() / x.sum()
    cov = np.cov(np.vstack([y, x]), ddof=1)
    variance = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * x.mean() ** 2)
    return Estimate(float(r), float(max(variance, 0.0)), n)


def mean_estimate(values: np.ndarray) -> Estimate:
    """The mean over users and the variance of the mean."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return Estimate(float("nan"), float("nan"), len(v))
    return Estimate(float(v.mean()), float(v.var(ddof=1) / len(v)), len(v))


def compare(treatment: Estimate, control: Estimate, alpha: float) -> dict[str, Any]:
    """Relative lift t/c − 1 with its (1 − alpha) delta-method interval; the p-value of
    the two-sided z-test of t = c."""
    t, c = treatment.value, control.value
    if not (math.isfinite(t) and math.isfinite(c)) or c == 0:
        return {
            "lift": None,
            "ci_low": None,
            "ci_high": None,
            "p_value": None,
            "significant": False,
        }
    lift = t / c - 1
    se_lift = math.sqrt(treatment.variance / c**2 + t**2 * control.variance / c**4)
    se_diff = math.sqrt(treatment.variance + control.variance)
    z = stats.norm.ppf(1 - alpha / 2)
    p = 1.0 if se_diff == 0 else float(2 * stats.norm.sf(abs(t - c) / se_diff))
    return {
        "lift": lift,
        "ci_low": lift - z * se_lift,
        "ci_high": lift + z * se_lift,
        "p_value": p,
        "significant": bool(p < alpha),
    }


def srm_p_value(users: dict[str, int], shares: dict[str, float]) -> float | None:
    """Chi-square goodness of fit of the users per arm to the planned shares: a small
    value says the split is broken (assignment, logging or a filter), not the model."""
    observed = np.array([users.get(arm, 0) for arm in shares], dtype=np.float64)
    if observed.sum() == 0:
        return None
    expected = observed.sum() * np.array(list(shares.values()))
    return float(stats.chisquare(observed, expected).pvalue)


def arm_estimates(units: pd.DataFrame) -> dict[str, Estimate]:
    """Each metric of one arm's users."""
    return {
        "follow_through_rate": ratio_estimate(units["follows"], units["impressions"]),
        "follows_per_user": mean_estimate(units["follows"]),
        "retention": ratio_estimate(units["retained"], units["follows"]),
    }


def placebo_false_positive_rate(
    units: pd.DataFrame, replications: int, alpha: float, seed: int
) -> dict[str, Any]:
    """Split the same users at random into two halves `replications` times and count how
    often follow-through differs 'significantly': the test's real false-positive rate on
    this traffic (should be close to alpha)."""
    rng = np.random.default_rng(seed)
    y = units["follows"].to_numpy()
    x = units["impressions"].to_numpy()
    p_values = []
    for _ in range(replications):
        half = rng.random(len(units)) < 0.5
        result = compare(
            ratio_estimate(y[half], x[half]), ratio_estimate(y[~half], x[~half]), alpha
        )
        p_values.append(result["p_value"])
    p = np.array(p_values, dtype=np.float64)
    return {
        "replications": replications,
        "false_positive_rate": float((p < alpha).mean()),
        "users": len(units),
    }


# ---------------------------------------------------------------- the report


def report(
    store: ExperimentStore,
    name: str,
    cfg: Config,
    popularity: pd.Series | None = None,
    now: dt.datetime | None = None,
    attributes: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Everything about one experiment: per-arm figures, each arm against the control on
    every metric, the SRM p-value, and warnings (early read, sample-ratio mismatch)."""
    exp = store.get(name)
    ec = cfg.experiments
    own = store.impressions(name)
    since = own["ts"].min() if not own.empty else None
    # Every experiment's impressions since this one began: a later experiment's list may
    # be what really showed an account that this one also showed.
    impressions = store.impressions(None, since) if since is not None else own
    events = store.events(since)
    units = attribute(impressions, events, ec.attribution_hours, ec.retention_days, name)
    impressions = own
    followed = units.attrs.get("followed_accounts")
    arms: dict[str, Any] = {}
    estimates: dict[str, dict[str, Estimate]] = {}
    for arm in exp.arms:
        mine = units[units["arm"] == arm.name]
        estimates[arm.name] = arm_estimates(mine)
        accounts = (
            followed[followed["arm"] == arm.name]["account_id"] if followed is not None else []
        )
        arms[arm.name] = {
            "target": arm.target,
            "share": arm.share,
            "users": int(len(mine)),
            "impressions": int(mine["impressions"].sum()),
            "follows": int(mine["follows"].sum()),
            "retained": int(mine["retained"].sum()),
            **{m: _finite(e.value) for m, e in estimates[arm.name].items()},
            "accounts_followed": int(pd.Series(accounts).nunique()),
            "followed_popularity": _mean_popularity(accounts, popularity),
        }
        if attributes is not None and not attributes.empty:
            shown = impressions[impressions["arm"] == arm.name]["account_id"]
            arms[arm.name]["groups"] = group_shares(attributes, mine, shown, accounts)
    comparisons = [
        {"treatment": arm.name, "control": exp.control, "metric": metric}
        | compare(estimates[arm.name][metric], estimates[exp.control][metric], ec.alpha)
        for arm in exp.arms
        if arm.name != exp.control
        for metric in METRICS
    ]
    srm = srm_p_value({a: arms[a]["users"] for a in arms}, {a.name: a.share for a in exp.arms})
    warnings = []
    short = [a for a, v in arms.items() if v["users"] < exp.min_users_per_arm]
    if short:
        warnings.append(
            f"read before the planned sample size ({exp.min_users_per_arm} users per arm): "
            + ", ".join(f"{a} has {arms[a]['users']}" for a in short)
            + "; intervals may move"
        )
    if srm is not None and srm < 0.001:
        warnings.append(
            f"sample-ratio mismatch (p = {srm:.2g}): the arms' user counts do not match their "
            "shares; do not trust the comparisons until the cause is found"
        )
    return {
        "experiment": name,
        "status": exp.status,
        "reason": exp.reason,
        "control": exp.control,
        "canary": exp.canary,
        "arms": arms,
        "comparisons": comparisons,
        "srm_p_value": srm,
        "warnings": warnings,
        "alpha": ec.alpha,
        "read_at": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
    }


def group_shares(
    attributes: pd.DataFrame, units: pd.DataFrame, shown: pd.Series, followed: Any
) -> dict[str, Any]:
    """Per attribute column: per account group, its share of the accounts shown and of the
    follows they won; per consumer group (the user's own value), users and follow-through."""
    out: dict[str, Any] = {}
    followed = pd.Series(followed, dtype="int64")
    for column in attributes.columns:
        labels = attributes[column].astype(object).where(attributes[column].notna(), "none")
        labels = labels.astype(str)
        exposure = labels.reindex(shown.to_numpy()).value_counts(normalize=True)
        follows = labels.reindex(followed.to_numpy()).value_counts(normalize=True)
        user_label = labels.reindex(units["user_id"].to_numpy()).to_numpy()
        consumers = {}
        for label in sorted(set(user_label.astype(str))):
            mask = user_label == label
            est = ratio_estimate(units["follows"][mask], units["impressions"][mask])
            consumers[label] = {"users": int(mask.sum()), "follow_through_rate": _finite(est.value)}
        out[column] = {
            "accounts": {
                label: {
                    "exposure_share": float(exposure.get(label, 0.0)),
                    "follow_share": float(follows.get(label, 0.0)),
                }
                for label in sorted(set(exposure.index) | set(follows.index))
            },
            "consumers": consumers,
        }
    return out


def canary_verdict(rep: dict[str, Any], exp: Experiment, max_drop: float) -> dict[str, Any]:
    """What to do with the canary arm now: `rollback` when a guardrail metric is
    significantly below control by more than `max_drop`; `promote` when its follow-through
    lift is significantly positive, the planned size is reached and no guardrail fails;
    otherwise `continue`."""
    if exp.canary is None:
        return {"action": "none", "reasons": ["not a canary experiment"]}
    mine = {c["metric"]: c for c in rep["comparisons"] if c["treatment"] == exp.canary}
    failed = [
        f"{m}: lift {mine[m]['lift']:+.1%} (95% CI {mine[m]['ci_low']:+.1%} to "
        f"{mine[m]['ci_high']:+.1%}, p = {mine[m]['p_value']:.3g})"
        for m in GUARDRAILS
        if mine.get(m, {}).get("significant") and mine[m]["lift"] < -max_drop
    ]
    if failed:
        return {"action": "rollback", "reasons": [f"guardrail failed: {f}" for f in failed]}
    ftr = mine.get("follow_through_rate", {})
    sized = all(v["users"] >= exp.min_users_per_arm for v in rep["arms"].values())
    if ftr.get("significant") and ftr["lift"] > 0 and sized:
        return {
            "action": "promote",
            "reasons": [f"follow-through lift {ftr['lift']:+.1%} (p = {ftr['p_value']:.3g})"],
        }
    return {
        "action": "continue",
        "reasons": ["no significant win yet" if sized else "planned sample size not reached"],
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _mean_popularity(accounts: Any, popularity: pd.Series | None) -> float | None:
    accounts = pd.Series(accounts, dtype="int64")
    if popularity is None or accounts.empty:
        return None
    return float(popularity.reindex(accounts).fillna(0).mean())


def report_table(rep: dict[str, Any]) -> pd.DataFrame:
    """The comparisons as a table (for MLflow and the terminal)."""
    return pd.DataFrame(rep["comparisons"])


def plot_report(rep: dict[str, Any], path: Path) -> Path:
    """Lift with its interval, per arm and metric (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in rep["comparisons"] if c["lift"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.6 * max(len(rows), 1) + 1.2))
    for i, c in enumerate(rows):
        color = (
            "tab:green"
            if c["significant"] and c["lift"] > 0
            else ("tab:red" if c["significant"] else "tab:gray")
        )
        ax.errorbar(
            [c["lift"] * 100],
            [i],
            xerr=[[(c["lift"] - c["ci_low"]) * 100], [(c["ci_high"] - c["lift"]) * 100]],
            fmt="o",
            color=color,
            capsize=4,
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{c['treatment']} vs {c['control']}: {c['metric']}" for c in rows])
    ax.set_xlabel(f"relative lift, % ({(1 - rep['alpha']) * 100:.0f}% CI)")
    ax.set_title(f"experiment {rep['experiment']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- legacy blend


def write_blend_table(cfg: Config, run_dir: Path, k: int, progress: bool = True) -> Path:
    """The narrow-source blend (friends-of-friends, co-follow CF, popularity, interleaved)
    for every account as a user, from the run's training follows: users x k account ids,
    -1 where a user has fewer. The service serves the `blend` arm from it."""
    from followrec.evaluation.baselines import GraphContext, run_sources
    from followrec.evaluation.evaluate import segments
    from followrec.features.ingest import load_dataset
    from followrec.features.split import split_dataset

    ds = load_dataset(cfg, progress=progress)
    split = split_dataset(ds, cfg.split)
    ctx = GraphContext.from_train(split.train, ds.n_accounts, segments(ds), progress=progress)
    users = np.arange(ds.n_accounts, dtype=np.int64)
    blend_cfg = dataclasses.replace(cfg.baselines, sources=("blend",))
    lists = run_sources(ctx, users, k, blend_cfg)["blend"][0].astype(np.int64)
    path = Path(run_dir) / "experiments" / BLEND_FILE
    with atomic_file(path) as fh:  # streamed: accounts x k ids, 800 MB at 1M accounts
        np.save(fh, lists)
    return path
