"""The evaluate step: split, run every candidate source (the narrow baselines and the
two-tower variants), score them with one protocol, report, and track in MLflow."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from followrec.core.atomic import atomic_write
from followrec.core.config import Config, save_config
from followrec.core.errors import InputError
from followrec.core.metrics import (
    Relevance,
    evaluate_recommendations,
    exposure_disparity,
    max_disparity,
    popularity_percentile,
)
from followrec.evaluation.baselines import GraphContext, run_sources
from followrec.evaluation.plots import training_plot
from followrec.evaluation.report import table, write_report
from followrec.features.contract import Dataset
from followrec.features.ingest import load_dataset, training_features
from followrec.features.split import Split, split_dataset
from followrec.features.transforms import (
    ACTIVITY_LABELS,
    FeatureTables,
    activity_bucket,
    encode,
    fit_vocabulary,
)
from followrec.registry.tracking import MODEL_NAME, Tracker, flat_metrics, tracking_uri

log = logging.getLogger(__name__)

# Two-tower variants a report can include; each is the train config plus these overrides.
VARIANTS: dict[str, dict[str, Any]] = {
    "two_tower": {},
    "two_tower_pointwise": {"objective": "pointwise"},
    "two_tower_mixed": {"mixed_negatives": 512},
    "two_tower_niche": {"mixed_negatives": 512, "negative_exponent": -0.5},
    "two_tower_popular": {"mixed_negatives": 512, "negative_exponent": 0.5},
    "two_tower_interaction": {"interaction_head": True},
}
REGISTERED_VARIANT = "two_tower"


def segments(ds: Dataset) -> np.ndarray:
    """Per account, a code for its (language, country) pair."""
    lang = encode(ds.accounts["language"], fit_vocabulary(ds.accounts["language"]))
    country = encode(ds.accounts["country"], fit_vocabulary(ds.accounts["country"]))
    return np.unique(lang * (int(country.max()) + 1) + country, return_inverse=True)[1]


def attribute_labels(ds: Dataset, column: str) -> np.ndarray:
    """Each account's value of an attribute column as a label ('none' when missing)."""
    if column not in ds.accounts.columns:
        known = [c for c in ds.accounts.columns if c not in ("account_id", "external_id")]
        raise InputError(
            f"not an account attribute; known: {', '.join(known)}",
            field="eval.groups",
            value=column,
        )
    values = ds.accounts.set_index("account_id")[column].reindex(np.arange(ds.n_accounts))
    if values.map(lambda v: isinstance(v, (list, np.ndarray))).any():
        raise InputError("a list column cannot group accounts", field="eval.groups", value=column)
    return values.astype(object).where(values.notna(), "none").astype(str).to_numpy()


def user_groups(
    ds: Dataset, split: Split, users: np.ndarray, labels: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Boolean masks over evaluated users: by language, activity bucket, cold start, and
    each attribute in `labels` (column -> every account's label; the user's own value)."""
    groups: dict[str, np.ndarray] = {}
    for column, every_label in (labels or {}).items():
        label = every_label[users]
        for value in sorted(set(label)):
            groups[f"{column}={value}"] = label == value
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


def variant_config(cfg: Config, variant: str) -> Config:
    """The config one two-tower variant trains with."""
    if variant not in VARIANTS:
        raise InputError(
            f"unknown two-tower variant; known: {', '.join(VARIANTS)}",
            field="eval.two_tower",
            value=variant,
        )
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **VARIANTS[variant]))


def eval_users(split: Split, cfg: Config) -> np.ndarray:
    """The users every source is scored on."""
    users = sample_users(split.eval_users(), cfg.eval.max_users, cfg.eval.seed)
    if len(users) == 0:
        raise InputError("no user has a holdout follow to evaluate", field="split")
    return users


def score_sources(
    ds: Dataset,
    split: Split,
    cfg: Config,
    users: np.ndarray,
    progress: bool = True,
    extra: dict[str, tuple[np.ndarray, float]] | None = None,
) -> dict[str, Any]:
    """Recommend with every baseline (plus `extra` lists) and compute every metric."""
    ks = tuple(sorted(cfg.eval.ks))
    if not ks or ks[0] < 1:
        raise InputError("K values must be positive", field="eval.ks", value=list(ks))
    ctx = GraphContext.from_train(split.train, ds.n_accounts, segments(ds), progress=progress)
    results = run_sources(ctx, users, ks[-1], cfg.baselines) if cfg.baselines.sources else {}
    results.update(extra or {})
    relevance = Relevance.from_holdout(split.holdout, users, ds.n_accounts)
    percentile = popularity_percentile(ctx.popularity)
    labels = {column: attribute_labels(ds, column) for column in cfg.eval.groups}
    groups = user_groups(ds, split, users, labels)
    followed = split.holdout["followee_id"].to_numpy()[
        np.isin(split.holdout["follower_id"].to_numpy(), users)
    ]
    disparity_k = 100 if 100 in ks else ks[-1]
    sources = {}
    for name, (recs, seconds) in results.items():
        metrics = evaluate_recommendations(recs, relevance, ks, percentile, groups)
        if labels:
            metrics["account_groups"] = {
                column: exposure_disparity(recs, disparity_k, values, followed)
                for column, values in labels.items()
            }
            metrics["max_disparity"] = max(
                max_disparity(g) for g in metrics["account_groups"].values()
            )
        metrics["seconds"] = round(seconds, 3)
        sources[name] = metrics
    return {"ks": list(ks), "sources": sources}


def train_variant(
    ds: Dataset,
    split: Split,
    cfg: Config,
    variant: str,
    out_dir: Path,
    tracker: Tracker,
    progress: bool,
) -> dict[str, Any]:
    """Train one variant (resuming its checkpoint) in a nested MLflow run and save it."""
    from followrec.training.model_io import save_model_dir
    from followrec.training.train import train_two_tower

    vcfg = variant_config(cfg, variant)
    with tracker.child(f"train-{variant}") as run_id:
        tracker.log_params(
            {f"train.{k}": v for k, v in dataclasses.asdict(vcfg.train).items()}
            | {"variant": variant}
        )
        trained = train_two_tower(
            ds,
            split,
            vcfg,
            checkpoint=out_dir / "checkpoints" / f"{variant}.pt",
            progress=progress,
            on_epoch=lambda epoch, record: tracker.log_metrics(
                {k: v for k, v in record.items() if k != "epoch"}, step=epoch
            ),
        )
        model_dir = save_model_dir(trained, out_dir / "models" / variant)
        plot = training_plot(trained.history, variant, out_dir / f"training_{variant}.png")
        tracker.log_artifact(plot)
        tracker.log_metrics(
            {"train_seconds": trained.seconds, "examples_per_second": trained.examples_per_second}
        )
        if trained.refit is not None:
            refit = {f"refit_{k}": v for k, v in trained.refit.items() if v is not None}
            tracker.log_metrics(refit)
        tracker.set_tags({"schema_hash": trained.schema["hash"], "variant": variant})
    return {
        "run_id": run_id,
        "model_dir": str(model_dir),
        "history": trained.history,
        "seconds": round(trained.seconds, 1),
        "examples_per_second": round(trained.examples_per_second),
        "schema_hash": trained.schema["hash"],
        "refit": trained.refit,
    }


class Prepared(NamedTuple):
    """What the train and evaluate steps both start from."""

    ds: Dataset
    split: Split
    users: np.ndarray


def prepare(cfg: Config, progress: bool) -> Prepared:
    """The dataset, its split and the evaluated users, after failing fast on bad settings."""
    for variant in cfg.eval.two_tower:
        variant_config(cfg, variant)  # fail on a bad name before any work
    ds = load_dataset(cfg, progress=progress)
    split = split_dataset(ds, cfg.split)
    return Prepared(ds, split, eval_users(split, cfg))


def train(
    cfg: Config, out_dir: str | Path, prepared: Prepared | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train every configured two-tower variant under one parent MLflow run; writes
    trained.json (variants, model folders, run ids) for the evaluate step."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    ds, split, _ = prepared or prepare(cfg, progress)
    fingerprint = _fingerprint(cfg, ds)
    done = out_dir / "trained.json"
    if done.exists():
        previous = json.loads(done.read_text())
        models = [Path(v["model_dir"]) for v in previous["variants"].values()]
        if previous.get("fingerprint") == fingerprint and all(p.exists() for p in models):
            log.info("already trained with these settings on this data: %s", done)
            return previous  # a re-run of this step: same models, same MLflow runs
    save_config(cfg, out_dir / "config.yaml")  # inputs are valid; later steps reread it
    uri = tracking_uri(cfg.mlflow.tracking_uri, out_dir) if cfg.mlflow.enabled else ""
    with Tracker(
        cfg.mlflow.enabled, uri, cfg.mlflow.experiment, out_dir, f"evaluate-{ds.name}"
    ) as tracker:
        tracker.log_params(cfg.flat())
        variants = {
            v: train_variant(ds, split, cfg, v, out_dir, tracker, progress)
            for v in cfg.eval.two_tower
        }
    trained = {
        "dataset": ds.name,
        "tracking_uri": uri,
        "mlflow_run_id": tracker.run_id,
        "variants": variants,
        "seconds": round(time.perf_counter() - started, 1),
        "fingerprint": fingerprint,
    }
    atomic_write(out_dir / "trained.json", json.dumps(trained, indent=2))
    return trained


def evaluate(
    cfg: Config,
    out_dir: str | Path,
    prepared: Prepared | None = None,
    tables: FeatureTables | None = None,
    progress: bool = True,
    tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the trained variants (on `tables`, e.g. a Feast training set, else features
    built here) and every narrow source; write report.json/report.md and plots; register
    the two-tower model with its metrics as version tags."""
    from followrec.training.model_io import load_model_dir
    from followrec.training.retrieval import two_tower_recommendations

    out_dir = Path(out_dir)
    started = time.perf_counter()
    ds, split, users = prepared or prepare(cfg, progress)
    trained_path = out_dir / "trained.json"
    if cfg.eval.two_tower and not trained_path.exists():
        raise InputError("no trained models here: run the train step first", path=str(trained_path))
    trained = json.loads(trained_path.read_text()) if trained_path.exists() else {"variants": {}}
    uri = trained.get("tracking_uri", "")
    result: dict[str, Any] = {}
    with Tracker(
        cfg.mlflow.enabled and bool(uri),
        uri,
        cfg.mlflow.experiment,
        out_dir,
        f"evaluate-{ds.name}",
        resume_run_id=trained.get("mlflow_run_id"),
    ) as tracker:
        table_seconds = 0.0
        if tables is None and trained["variants"]:
            tables, table_seconds = _full_tables(ds, split, cfg)
        extra, examples = {}, {}
        for variant, info in trained["variants"].items():
            model = load_model_dir(info["model_dir"])
            recs, seconds = two_tower_recommendations(
                model, ds, split, users, max(cfg.eval.ks), tables
            )
            total = info["seconds"] + table_seconds + seconds
            extra[variant] = (recs["retrieval"], total)
            if "rerank" in recs:
                extra[f"{variant}_rerank"] = (recs["rerank"], total)
            columns = [f["name"] for f in model.schema["consumer"]]
            examples[variant] = tables.consumer[columns].head(3).reset_index(drop=True)
        scored = score_sources(ds, split, cfg, users, progress=progress, extra=extra)
        summary = split.summary()
        summary["evaluated_users"] = int(len(users))
        summary["cold_start_eval_users"] = int(split.cold_start[users].sum())
        report: dict[str, Any] = {
            "dataset": ds.counts(),
            "split": summary,
            "ks": scored["ks"],
            "sources": scored["sources"],
            "training": {
                v: {
                    k: info.get(k)
                    for k in ("history", "seconds", "examples_per_second", "schema_hash", "refit")
                }
                for v, info in trained["variants"].items()
            },
            "config": cfg.to_dict(),
        }
        report["seconds"] = round(time.perf_counter() - started + trained.get("seconds", 0), 1)
        paths = write_report(report, out_dir)
        for source, values in report["sources"].items():
            tracker.log_metrics(flat_metrics(f"{source}.", values))
        tracker.set_tags({"followrec.step": "evaluate", "dataset": ds.name})
        for path in paths.values():
            tracker.log_artifact(path)
        for variant, info in trained["variants"].items():
            with tracker.child(variant, run_id=info["run_id"]):
                metrics = report["sources"][variant]
                tracker.log_metrics(flat_metrics("test_", metrics))
                done = _registered_for(out_dir, info["run_id"])
                if done is not None:  # a re-run of this step: keep the version it registered
                    result["model_version"] = done
                    result["model_name"] = MODEL_NAME
                    continue
                version = tracker.log_model(
                    Path(info["model_dir"]),
                    examples[variant],
                    register=variant == REGISTERED_VARIANT,
                    tags={
                        "schema_hash": info["schema_hash"],
                        "dataset": ds.name,
                        "recall_at_100": metrics.get("recall@100"),
                        "map_at_100": metrics.get("map@100"),
                        "mlflow_parent_run": tracker.run_id,
                        **(tags or {}),
                    },
                )
                if version is not None:
                    result["model_version"] = version
                    result["model_name"] = MODEL_NAME
                    atomic_write(
                        out_dir / "registered.json",
                        json.dumps(
                            {
                                "name": MODEL_NAME,
                                "version": version,
                                "variant": variant,
                                "tracking_uri": uri,
                                "train_run_id": info["run_id"],
                            }
                        ),
                    )
    result.update({"report_uri": str(paths["json"].resolve()), "table": table(report)})
    if tracker.run_id:
        result["mlflow_run_id"] = tracker.run_id
        result["tracking_uri"] = uri
    return result


def run(cfg: Config, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """`followrec evaluate`: train the two-tower variants, then score every source. Bad
    input leaves no trace: an output folder this call made is removed again."""
    out_dir = Path(out_dir)
    fresh = not out_dir.exists() or not any(out_dir.iterdir())
    try:
        prepared = prepare(cfg, progress)  # loaded and split once for both steps
        train(cfg, out_dir, prepared=prepared, progress=progress)
        return evaluate(cfg, out_dir, prepared=prepared, progress=progress)
    except InputError:
        if fresh:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _fingerprint(cfg: Config, ds: Dataset) -> str:
    """What a training run depends on: every setting and the data's size and edges."""
    import hashlib

    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    digest.update(json.dumps(ds.counts(), sort_keys=True, default=str).encode())
    for column in ("follower_id", "followee_id"):
        digest.update(np.ascontiguousarray(ds.follows[column].to_numpy()).tobytes())
    return digest.hexdigest()[:16]


def _registered_for(out_dir: Path, train_run_id: str | None) -> str | None:
    """The version already registered from this training run, if any."""
    path = out_dir / "registered.json"
    if train_run_id is None or not path.exists():
        return None
    registered = json.loads(path.read_text())
    return str(registered["version"]) if registered.get("train_run_id") == train_run_id else None


def _full_tables(ds: Dataset, split: Split, cfg: Config) -> tuple[FeatureTables, float]:
    """Feature tables of all training follows (shared by every variant), and their seconds."""
    started = time.perf_counter()
    tables = training_features(ds, split, cfg)
    return tables, time.perf_counter() - started
