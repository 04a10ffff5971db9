"""What the serving options cost and gain, measured on a run's holdout with its champion:

- cold start (case study Q2): Recall@100 of users with few training follows, served by the
  tower from their features, and from an onboarding profile alone (language, country,
  interests; no follows), against popularity by (language, country) and overall popularity;
- re-ranking (Q6): Recall@100 / MAP@100 lost and catalog coverage / novelty gained by the
  popularity discount and the diversity (MMR) re-rank at several strengths.

Written to RUN/serving_report.json and logged to MLflow with a recall/coverage plot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from followrec.core.atomic import atomic_write
from followrec.core.config import Config
from followrec.core.errors import InputError
from followrec.core.metrics import Relevance, evaluate_recommendations, popularity_percentile
from followrec.evaluation.baselines import GraphContext, popularity, popularity_segment
from followrec.evaluation.evaluate import sample_users, segments
from followrec.features.contract import read_dataset
from followrec.features.split import split_dataset
from followrec.serving.rerank import discount, mmr
from followrec.training.data import tower_tensors
from followrec.training.train import encode

K = 100
CHUNK = 1024  # users scored against every producer at once
DISCOUNTS = (0.05, 0.1, 0.2)
DIVERSITIES = (0.2, 0.5, 0.8)


def _queries(pair: Any, consumer: pd.DataFrame, users: np.ndarray) -> np.ndarray:
    trained = pair.trained
    tensors = tower_tensors(
        consumer,
        trained.schema["consumer"],
        trained.dense_stats["consumer"],
        trained.train_config["max_history"],
        trained.n_ids,
    )
    with torch.no_grad():
        return encode(trained.model.consumer, tensors, users).numpy().astype(np.float32)


def _pools(
    pair: Any,
    vectors: np.ndarray,
    queries: np.ndarray,
    users: np.ndarray,
    ctx: GraphContext,
    depth: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per user the best `depth` index rows (scores) not followed in training, not self."""
    row_of = np.full(ctx.n, -1, dtype=np.int64)
    row_of[pair.account_ids] = np.arange(len(pair.account_ids))
    all_rows, all_scores = [], []
    for lo in range(0, len(users), CHUNK):
        chunk = users[lo : lo + CHUNK]
        scores = queries[lo : lo + CHUNK] @ vectors.T
        followed = ctx.follows[chunk].tocoo()
        hit = row_of[followed.col] >= 0
        scores[followed.row[hit], row_of[followed.col[hit]]] = -np.inf
        own = row_of[chunk]
        scores[np.flatnonzero(own >= 0), own[own >= 0]] = -np.inf
        rows = np.argpartition(-scores, depth, axis=1)[:, :depth]
        part = np.take_along_axis(scores, rows, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        all_rows.append(np.take_along_axis(rows, order, axis=1))
        all_scores.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(all_rows), np.concatenate(all_scores)


def _novelty(recs: np.ndarray, popularity_counts: np.ndarray) -> float:
    """Mean self-information -log2(p) of recommended accounts, p = share of follows."""
    share = (popularity_counts + 1) / (popularity_counts.sum() + len(popularity_counts))
    valid = recs[recs >= 0]
    return float(-np.log2(share[valid]).mean()) if len(valid) else 0.0


def serving_report(
    cfg: Config, run_dir: str | Path, max_users: int = 5000, progress: bool = True
) -> dict[str, Any]:
    """Measure cold start and re-ranking on the run's holdout with its serving pair."""
    from followrec.core.layout import Layout
    from followrec.features.feature_store import read_feature_tables
    from followrec.serving.candidates import Recommender, vectors_of

    started = time.perf_counter()
    run = Path(run_dir)
    rec = Recommender(run, cfg)
    pair = rec.pair
    vectors = vectors_of(pair.index)
    ds = read_dataset(Layout(run).raw)
    split = split_dataset(ds, cfg.split)
    consumer = read_feature_tables(Layout(run).training_set).consumer
    ctx = GraphContext.from_train(split.train, ds.n_accounts, segments(ds), progress=False)
    percentile = popularity_percentile(ctx.popularity)
    users = sample_users(split.eval_users(), max_users, cfg.eval.seed)
    if not len(users):
        raise InputError("no holdout users to evaluate", field="split")
    relevance = Relevance.from_holdout(split.holdout, users, ds.n_accounts)
    account_of = pair.account_ids

    def scored(recs: np.ndarray) -> dict[str, float]:
        m = evaluate_recommendations(recs, relevance, (K,), percentile)
        return {
            "recall@100": m["recall@100"],
            "map@100": m["map@100"],
            "coverage@100": m["coverage@100"],
            "popularity_percentile@100": m["popularity_percentile@100"],
            "novelty@100": _novelty(recs, ctx.popularity),
        }

    queries = _queries(pair, consumer, users)
    depth = min(len(account_of) - 1, K * 3)
    rows, scores = _pools(pair, vectors, queries, users, ctx, depth)
    row_percentile = pair.percentile
    variants: dict[str, dict[str, float]] = {"none": scored(account_of[rows[:, :K]])}
    for strength in DISCOUNTS:
        adjusted = discount(scores, row_percentile[rows], strength)
        order = np.argsort(-adjusted, axis=1, kind="stable")[:, :K]
        recs = account_of[np.take_along_axis(rows, order, axis=1)]
        variants[f"popularity_discount={strength}"] = scored(recs)
    for diversity in DIVERSITIES:
        picked = np.empty((len(users), K), dtype=np.int64)
        for i in tqdm(range(len(users)), desc=f"mmr {diversity}", disable=not progress):
            choice = mmr(scores[i], vectors[rows[i]], K, diversity)
            picked[i] = rows[i][choice]
        variants[f"diversity={diversity}"] = scored(account_of[picked])

    cold_users = users[split.cold_start[users]]
    cold: dict[str, Any] = {"users": int(len(cold_users))}
    if len(cold_users):
        cold_rel = Relevance.from_holdout(split.holdout, cold_users, ds.n_accounts)

        def cold_recall(recs: np.ndarray) -> float:
            m = evaluate_recommendations(recs, cold_rel, (K,), percentile)
            return round(float(m["recall@100"]), 4)

        profile = consumer.copy()
        empty = [np.zeros(0, dtype=np.int64)] * len(profile)
        profile["follows"], profile["recent_follows"] = empty, list(empty)
        profile["follow_count_bucket"] = 0
        for name, frame in (("two_tower", consumer), ("two_tower_onboarding_only", profile)):
            q = _queries(pair, frame, cold_users)
            r, _ = _pools(pair, vectors, q, cold_users, ctx, K)
            cold[name] = cold_recall(account_of[r])
        cold["popularity_by_country"] = cold_recall(
            popularity_segment(ctx, cold_users, K, cfg.baselines)
        )
        cold["popularity"] = cold_recall(popularity(ctx, cold_users, K, cfg.baselines))
    out = {
        "model_version": pair.model_version,
        "index_version": pair.index_version,
        "users": int(len(users)),
        "pool": int(depth),
        "rerank": {k: {m: round(v, 4) for m, v in d.items()} for k, d in variants.items()},
        "cold_start": cold,
        "cold_start_definition": f"at most {cfg.split.cold_start_max_follows} training follows",
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write(run / "serving_report.json", json.dumps(out, indent=2))
    plot = _plot(out, run / "serving_report.png")
    _log(cfg, run, out, plot)
    return out


def _plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from followrec.evaluation.plots import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, m in report["rerank"].items():
        ax.scatter(m["coverage@100"], m["recall@100"], s=30)
        ax.annotate(name, (m["coverage@100"], m["recall@100"]), fontsize=7)
    ax.set_xlabel("catalog coverage@100")
    ax.set_ylabel("Recall@100")
    ax.set_title(f"Re-rank trade-off, champion v{report['model_version']}")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _log(cfg: Config, run: Path, report: dict[str, Any], plot: Path) -> None:
    if not cfg.mlflow.enabled:
        return
    from followrec.registry.tracking import Tracker, flat_metrics, tracking_uri

    uri = tracking_uri(cfg.mlflow.tracking_uri, run)
    with Tracker(True, uri, cfg.mlflow.experiment, run, "serving-report") as tracker:
        tracker.set_tags(
            {"followrec.step": "serving_report", "model_version": report["model_version"]}
        )
        metrics: dict[str, float] = {}
        for name, values in report["rerank"].items():
            tag = name.replace("=", "_")
            metrics.update(flat_metrics(f"rerank.{tag}.", values))
        metrics.update(flat_metrics("cold_start.", report["cold_start"]))
        tracker.log_metrics(metrics)
        tracker.log_artifact(run / "serving_report.json")
        tracker.log_artifact(plot)
