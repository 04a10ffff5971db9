"""The pipeline's steps, one function each, shared by the Airflow DAGs and the CLI. A run
folder holds everything a run makes:

    RUN/staged/         raw and feature tables waiting for their validation
    RUN/raw/            validated contract tables (what training reads)
    RUN/validation/     Great Expectations project, results JSON, Data Docs, drift reference
    RUN/features/       validated feature tables, the Feast sources
    RUN/feast/          the run's feature_store.yaml, registry and SQLite online store
    RUN/training_set/   feature tables fetched back from Feast (point-in-time join)
    RUN/models/, report.json, gate.json, index.json, promotion.json, indexes/, mlflow.db
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from followrec.core.atomic import publish_snapshot
from followrec.core.config import Config, save_config
from followrec.core.errors import InputError
from followrec.core.layout import Layout
from followrec.features import feature_store
from followrec.features.contract import read_dataset, write_dataset
from followrec.features.ingest import load_dataset, training_features
from followrec.features.spec import build_schema, load_spec
from followrec.features.split import split_dataset
from followrec.features.transforms import FeatureTables


def on_raw(cfg: Config, run: Path) -> Config:
    """The config with its data pointed at the run's validated raw tables."""
    data = dataclasses.replace(cfg.data, dataset="parquet", parquet_dir=str(Layout(run).raw))
    return dataclasses.replace(cfg, data=data)


def _timed(step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    out = step()
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out


# ---------------------------------------------------------------- followrec_features


def ingest(cfg: Config, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Load the configured source into RUN/staged/raw. Parquet input is copied unchecked:
    the validation step names what is wrong with it."""
    layout = Layout(Path(run))

    def step() -> dict[str, Any]:
        if cfg.data.dataset == "parquet":
            if not cfg.data.parquet_dir:
                raise InputError(
                    "--path DIR is required with --dataset parquet", field="data.parquet_dir"
                )
            ds = read_dataset(cfg.data.parquet_dir, validate=False)
        else:
            ds = load_dataset(cfg, progress=progress)
        write_dataset(ds, layout.staged_raw)
        return {
            "staged": str(layout.staged_raw.resolve()),
            "accounts": len(ds.accounts),
            "follows": len(ds.follows),
        }

    return _timed(step)


def validate_raw(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Great Expectations suites over the staged accounts and follows."""
    from followrec.features.validation import validate_raw as suites

    layout = Layout(Path(run))
    ds = read_dataset(layout.staged_raw, validate=False)
    out = _logged(
        cfg,
        layout,
        "raw",
        lambda: suites(ds.accounts, ds.follows, cfg.validation, layout.validation),
    )
    return out


def build_feature_tables(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Split the validated graph and build both towers' feature tables from the training
    follows, check the tower spec against them, and write them as the Feast sources with a
    manifest (schema version, snapshot time)."""
    layout = Layout(Path(run))

    def step() -> dict[str, Any]:
        ds = read_dataset(layout.staged_raw)
        tables = training_features(ds, split_dataset(ds, cfg.split), cfg)
        # The tower spec is checked here, not minutes later in training: a feature it names
        # that the tables lack (or of the wrong kind) fails this task naming the feature.
        build_schema(load_spec(cfg.train.spec), tables)
        return feature_store.write_feature_tables(tables, layout.staged_features)

    return _timed(step)


def validate_features(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Feature-table suites, with drift against the last successful run. When they pass,
    the staged raw and feature tables become RUN/raw and RUN/features (what Feast and
    training read) and the config is saved beside them; until then those stay as they were."""
    from followrec.features.validation import validate_features as suites

    layout = Layout(Path(run))
    if not layout.staged_features.exists() and layout.features.exists():
        # A retry after this task published: nothing is staged any more.
        save_config(cfg, layout.root / "config.yaml")
        return {"skipped": "nothing staged: the validated snapshot is already published"}
    consumer = pd.read_parquet(layout.staged_features / "consumer.parquet")
    producer = pd.read_parquet(layout.staged_features / "producer.parquet")
    out = _logged(
        cfg,
        layout,
        "features",
        lambda: suites(consumer, producer, cfg.validation, layout.validation),
    )
    publish_snapshot(layout.staged, layout.root, ("raw", "features"))
    save_config(cfg, layout.root / "config.yaml")
    return out


def _logged(cfg: Config, layout: Layout, kind: str, check: Callable[[], dict]) -> dict[str, Any]:
    """Run a validation and log its results and Data Docs to MLflow, pass or fail."""
    from followrec.features.validation import ValidationFailed
    from followrec.registry.tracking import log_validation, tracking_uri

    if not cfg.validation.enabled:
        return {"skipped": "validation.enabled is false"}
    failure: ValidationFailed | None = None
    try:
        summary = check()
    except ValidationFailed as exc:
        failure, summary = exc, {"success": False, "failed": exc.failed}
    if cfg.mlflow.enabled:
        docs = layout.validation / "gx" / "uncommitted" / "data_docs" / "local_site"
        log_validation(
            tracking_uri(cfg.mlflow.tracking_uri, layout.root),
            cfg.mlflow.experiment,
            f"validate-{kind}",
            layout.validation / f"{kind}.json",
            docs,
            failure is None,
        )
    if failure is not None:
        raise failure
    return summary


def feast_apply(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Write RUN/feast/feature_store.yaml and apply the Feast definitions for the tables."""
    layout = Layout(Path(run))
    return _timed(lambda: feature_store.apply(cfg.feast, layout.features, layout.feast))


def materialize(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Load the feature snapshot into the online store (the views in feast.online_towers)."""
    layout = Layout(Path(run))
    return _timed(
        lambda: feature_store.materialize(layout.features, layout.feast, cfg.feast.online_towers)
    )


# ---------------------------------------------------------------- followrec_training


def training_set(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Fetch both towers' features from Feast with get_historical_features at the snapshot
    time and keep them as RUN/training_set (what train, evaluate and the index read)."""
    layout = Layout(Path(run))

    def step() -> dict[str, Any]:
        tables = feature_store.historical_tables(layout.features, layout.feast)
        manifest = feature_store.write_feature_tables(tables, layout.training_set)
        return {"training_set": str(layout.training_set.resolve()), **manifest}

    return _timed(step)


def read_training_set(run: str | Path) -> FeatureTables:
    """The tables the training_set step fetched."""
    return feature_store.read_feature_tables(Layout(Path(run)).training_set)


def train(cfg: Config, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train the two-tower variants on the run's raw tables (MLflow nested runs)."""
    from followrec.evaluation import evaluate as step

    out = step.train(on_raw(cfg, Path(run)), run, progress=progress)
    return {k: out[k] for k in ("dataset", "mlflow_run_id", "seconds")} | {
        "variants": {v: {"model_dir": i["model_dir"]} for v, i in out["variants"].items()}
    }


def evaluate(cfg: Config, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Score the trained models on the Feast training set and every narrow source; register
    the two-tower model with its metrics and feature services as tags."""
    from followrec.evaluation import evaluate as step

    services = feature_store.read_manifest(Layout(Path(run)).features)["services"]
    out = step.evaluate(
        on_raw(cfg, Path(run)),
        run,
        tables=read_training_set(run),
        progress=progress,
        tags={f"feast.{tower}_service": name for tower, name in services.items()},
    )
    out.pop("table", None)
    return out


def gate(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Metric conditions: beat the champion and the floors."""
    from followrec.registry import promote as step

    return step.gate(on_raw(cfg, Path(run)), run)


def build_index(cfg: Config, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Encode every producer from the training set and write the challenger's index."""
    from followrec.registry import promote as step

    return step.build_index(
        on_raw(cfg, Path(run)), run, tables=read_training_set(run), progress=progress
    )


def validate_index(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Checksum, count, dimension, ANN recall and a smoke search."""
    from followrec.registry import promote as step

    return step.validate_index(on_raw(cfg, Path(run)), run)


def promote(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Move the champion alias and publish its index, or change neither."""
    from followrec.registry import promote as step

    return step.promote(on_raw(cfg, Path(run)), run)


# ---------------------------------------------------------------- followrec_index_refresh


def refresh_index(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Re-embed every producer with the current champion on the latest feature snapshot
    (from Feast) and write a new index version for it, without retraining."""
    from followrec.registry import promote as step

    layout = Layout(Path(run))
    tables = feature_store.historical_tables(layout.features, layout.feast)
    return step.refresh_index(cfg, run, tables)


def validate_refresh(cfg: Config, run: str | Path) -> dict[str, Any]:
    """The same checks an index passes before promotion."""
    from followrec.registry import promote as step

    return step.validate_refresh(cfg, run)


def publish_refresh(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Publish the refreshed index if it passed and the champion has not changed since."""
    from followrec.registry import promote as step

    return step.publish_refresh(cfg, run)


def experiment_report(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Report the running experiment (or experiments.name): JSON and MLflow."""
    from followrec.evaluation import online

    return online.report_step(cfg, run)


def experiment_decide(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Decide a running canary: roll it back, promote it, or let it run."""
    from followrec.evaluation import online

    return online.decide_step(cfg, run)


# Step name -> function; the DAG tasks and `followrec step NAME` both dispatch through it.
STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": ingest,
    "validate_raw": validate_raw,
    "build_features": build_feature_tables,
    "validate_features": validate_features,
    "feast_apply": feast_apply,
    "materialize": materialize,
    "training_set": training_set,
    "train": train,
    "evaluate": evaluate,
    "gate": gate,
    "build_index": build_index,
    "validate_index": validate_index,
    "promote": promote,
    "refresh_index": refresh_index,
    "validate_refresh": validate_refresh,
    "publish_refresh": publish_refresh,
    "experiment_report": experiment_report,
    "experiment_decide": experiment_decide,
}
PROGRESS_STEPS = {"ingest", "train", "evaluate", "build_index"}


def run_step(name: str, cfg: Config, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run one named step."""
    if name not in STEPS:
        raise InputError(f"unknown step; known: {', '.join(STEPS)}", field="step", value=name)
    if name in PROGRESS_STEPS:
        return STEPS[name](cfg, run, progress=progress)
    return STEPS[name](cfg, run)
