"""The evaluate step: split, run every candidate source, score them with one protocol."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.baselines import GraphContext, run_sources
from evaluation.metrics import Relevance, evaluate_recommendations, popularity_percentile
from evaluation.report import log_to_mlflow, table, tracking_uri, write_report
from features.contract import Dataset
from features.ingest import load_dataset
from features.split import Split, split_dataset
from features.transforms import ACTIVITY_LABELS, activity_bucket, encode, fit_vocabulary
from followrec.config import Config
from followrec.errors import InputError

log = logging.getLogger(__name__)


def segments(ds: Dataset) -> np.ndarray:
    """Per account, a code for its (language, country) pair."""
    lang = encode(ds.accounts["language"], fit_vocabulary(ds.accounts["language"]))
    country = encode(ds.accounts["country"], fit_vocabulary(ds.accounts["country"]))
    return np.unique(lang * (int(country.max()) + 1) + country, return_inverse=True)[1]


def user_groups(ds: Dataset, split: Split, users: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks over evaluated users: by language, activity bucket and cold start."""
    groups: dict[str, np.ndarray] = {}
    language = ds.accounts["language"].to_numpy()[users].astype(object)
    for value in sorted({str(v) for v in language if v is not None}):
        groups[f"language={value}"] = language == value
    bucket = activity_bucket(split.train_follow_count[users])
    for index, label in enumerate(ACTIVITY_LABELS):
        groups[f"activity={label}"] = bucket == index
    cold = split.cold_start[users]
    groups["cold_start=true"] = cold
    groups["cold_start=false"] = ~cold
    return groups


def sample_users(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    """All users, or a seeded sorted sample of at most max_users."""
    if max_users is None or len(users) <= max_users:
        return users
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(users, size=max_users, replace=False))


def score_sources(
    ds: Dataset,
    split: Split,
    cfg: Config,
    progress: bool = True,
    extra: dict[str, tuple[np.ndarray, float]] | None = None,
    users: np.ndarray | None = None,
) -> dict[str, Any]:
    """Recommend with every baseline (plus `extra` lists) and compute every metric."""
    ks = tuple(sorted(cfg.eval.ks))
    if not ks or ks[0] < 1:
        raise InputError("K values must be positive", field="eval.ks", value=list(ks))
    if users is None:
        users = sample_users(split.eval_users(), cfg.eval.max_users, cfg.eval.seed)
    if len(users) == 0:
        raise InputError("no user has a holdout follow to evaluate", field="split")
    ctx = GraphContext.from_train(split.train, ds.n_accounts, segments(ds), progress=progress)
    results = run_sources(ctx, users, ks[-1], cfg.baselines)
    results.update(extra or {})
    relevance = Relevance.from_holdout(split.holdout, users, ds.n_accounts)
    percentile = popularity_percentile(ctx.popularity)
    groups = user_groups(ds, split, users)
    sources = {}
    for name, (recs, seconds) in results.items():
        metrics = evaluate_recommendations(recs, relevance, ks, percentile, groups)
        metrics["seconds"] = round(seconds, 3)
        sources[name] = metrics
    return {"ks": list(ks), "sources": sources, "users": users}


def run(cfg: Config, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Load, split, score every source; write report.json/report.md/plot; log to MLflow."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    ds = load_dataset(cfg, progress=progress)
    split = split_dataset(ds, cfg.split)
    scored = score_sources(ds, split, cfg, progress=progress)
    users = scored.pop("users")
    summary = split.summary()
    summary["evaluated_users"] = int(len(users))
    summary["cold_start_eval_users"] = int(split.cold_start[users].sum())
    report: dict[str, Any] = {
        "dataset": ds.counts(),
        "split": summary,
        "ks": scored["ks"],
        "sources": scored["sources"],
        "config": cfg.to_dict(),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    paths = write_report(report, out_dir)
    result: dict[str, Any] = {"report_uri": str(paths["json"].resolve()), "table": table(report)}
    if cfg.mlflow.enabled:
        uri = tracking_uri(cfg.mlflow.tracking_uri, out_dir)
        result["mlflow_run_id"] = log_to_mlflow(
            report, paths, uri, cfg.mlflow.experiment, cfg.flat(), out_dir
        )
        result["tracking_uri"] = uri
    return result
