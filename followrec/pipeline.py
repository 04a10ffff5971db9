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
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from features import feature_store
from features.contract import read_dataset, write_dataset
from features.ingest import load_dataset
from features.split import split_dataset
from features.transforms import FeatureTables, build_features
from followrec.atomic import atomic_write, replace_dir
from followrec.config import Config, save_config
from followrec.errors import InputError


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each step reads and writes inside a run folder."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def staged_raw(self) -> Path:
        return self.root / "staged" / "raw"

    @property
    def staged_features(self) -> Path:
        return self.root / "staged" / "features"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def training_set(self) -> Path:
        return self.root / "training_set"


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
    from features.validation import validate_raw as suites

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
    follows; written as the Feast sources with a manifest (schema version, snapshot time)."""
    layout = Layout(Path(run))

    def step() -> dict[str, Any]:
        ds = read_dataset(layout.staged_raw)
        split = split_dataset(ds, cfg.split)
        tables = build_features(
            ds.accounts, split.train, split.train_engagements, cfg.features, ds.feature_kinds
        )
        return feature_store.write_feature_tables(tables, layout.staged_features)

    return _timed(step)


def validate_features(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Feature-table suites, with drift against the last successful run. When they pass,
    the staged raw and feature tables become RUN/raw and RUN/features (what Feast and
    training read) and the config is saved beside them; until then those stay as they were."""
    from features.validation import validate_features as suites

    layout = Layout(Path(run))
    consumer = pd.read_parquet(layout.staged_features / "consumer.parquet")
    producer = pd.read_parquet(layout.staged_features / "producer.parquet")
    out = _logged(
        cfg,
        layout,
        "features",
        lambda: suites(consumer, producer, cfg.validation, layout.validation),
    )
    replace_dir(layout.staged_raw, layout.raw)
    replace_dir(layout.staged_features, layout.features)
    save_config(cfg, layout.root / "config.yaml")
    return out


def _logged(cfg: Config, layout: Layout, kind: str, check: Callable[[], dict]) -> dict[str, Any]:
    """Run a validation and log its results and Data Docs to MLflow, pass or fail."""
    from evaluation.tracking import log_validation, tracking_uri
    from features.validation import ValidationFailed

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
    """Write RUN/feast/feature_store.yaml and apply feature_repo's definitions."""
    layout = Layout(Path(run))
    return _timed(lambda: feature_store.apply(cfg.feast, layout.features, layout.feast))


def materialize(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Load the feature snapshot into the online store."""
    layout = Layout(Path(run))
    return _timed(lambda: feature_store.materialize(layout.features, layout.feast))


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
    path = Layout(Path(run)).training_set
    manifest = feature_store.read_manifest(path)
    frames = {
        t: pd.read_parquet(path / f"{t}.parquet").drop(columns=["event_timestamp"])
        for t in feature_store.TOWERS
    }
    return FeatureTables(
        consumer=frames["consumer"],
        producer=frames["producer"],
        vocabularies=json.loads((path / "vocabularies.json").read_text()),
        feature_timestamp=pd.Timestamp(manifest["feature_timestamp"]),
    )


def train(cfg: Config, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train the two-tower variants on the run's raw tables (MLflow nested runs)."""
    from evaluation import evaluate as step

    out = step.train(on_raw(cfg, Path(run)), run, progress=progress)
    return {k: out[k] for k in ("dataset", "mlflow_run_id", "seconds")} | {
        "variants": {v: {"model_dir": i["model_dir"]} for v, i in out["variants"].items()}
    }


def evaluate(cfg: Config, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Score the trained models on the Feast training set and every narrow source; register
    the two-tower model with its metrics and feature services as tags."""
    from evaluation import evaluate as step

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
    from evaluation import promote as step

    return step.gate(on_raw(cfg, Path(run)), run)


def build_index(cfg: Config, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Encode every producer from the training set and write the challenger's index."""
    from evaluation import promote as step

    return step.build_index(
        on_raw(cfg, Path(run)), run, tables=read_training_set(run), progress=progress
    )


def validate_index(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Checksum, count, dimension, ANN recall and a smoke search."""
    from evaluation import promote as step

    return step.validate_index(on_raw(cfg, Path(run)), run)


def promote(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Move the champion alias and publish its index, or change neither."""
    from evaluation import promote as step

    return step.promote(on_raw(cfg, Path(run)), run)


# ---------------------------------------------------------------- followrec_index_refresh


def refresh_index(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Re-embed every producer with the current champion on the latest feature snapshot
    (from Feast) and write a new index version for it, without retraining."""
    from evaluation import promote as step
    from evaluation.registry import CHAMPION, alias_version
    from indexing.build import build_index_version
    from indexing.store import read_manifest, version_name

    run = Path(run)
    layout = Layout(run)
    client = step.client_for(cfg, run)
    champion = alias_version(client, CHAMPION)
    if champion is None or "index.version" not in champion.tags:
        raise InputError(
            "no champion with an index to refresh: run followrec_training first", field="champion"
        )
    root = step.index_root(cfg, run)
    current = read_manifest(root, champion.tags["index.version"])
    model_dir = Path(current["model_dir"])
    model = json.loads((model_dir / "model.json").read_text())
    tables = feature_store.historical_tables(layout.features, layout.feast)
    if len(tables.producer) > model["n_ids"]["accounts"]:
        raise InputError(
            "the feature snapshot has accounts the champion has no embedding for; "
            "retrain (followrec_training) instead of refreshing",
            field="accounts",
            value=len(tables.producer),
        )
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S")
    version = version_name(str(champion.version), refresh=stamp)
    manifest = build_index_version(
        model_dir,
        tables,
        root,
        version,
        cfg.index.target_recall,
        cfg.index.kind,
        cfg.index.sample_users,
    )
    out = {**manifest, "model_version": str(champion.version), "index_version": version}
    atomic_write(run / "refresh.json", json.dumps(out, indent=2))
    return out


def validate_refresh(cfg: Config, run: str | Path) -> dict[str, Any]:
    """The same checks an index passes before promotion."""
    from evaluation import promote as step

    run = Path(run)
    built = json.loads((run / "refresh.json").read_text())
    out = step.index_checks(
        step.index_root(cfg, run), built["index_version"], cfg.index.target_recall, built["count"]
    )
    atomic_write(run / "refresh_validation.json", json.dumps(out, indent=2))
    return out


def publish_refresh(cfg: Config, run: str | Path) -> dict[str, Any]:
    """Publish the refreshed index if it passed and the champion has not changed since."""
    from evaluation import promote as step
    from evaluation.registry import CHAMPION, alias_version
    from evaluation.tracking import MODEL_NAME
    from indexing.store import publish

    run = Path(run)
    built = json.loads((run / "refresh.json").read_text())
    checked = json.loads((run / "refresh_validation.json").read_text())
    client = step.client_for(cfg, run)
    champion = alias_version(client, CHAMPION)
    if not checked["passed"]:
        failed = [k for k, ok in checked["checks"].items() if not ok]
        raise InputError(f"refreshed index failed its checks: {', '.join(failed)}", field="index")
    if champion is None or str(champion.version) != built["model_version"]:
        return {"published": False, "reason": "the champion changed during the refresh"}
    publish(step.index_root(cfg, run), built["index_version"])
    client.set_model_version_tag(
        MODEL_NAME, built["model_version"], "index.version", built["index_version"]
    )
    return {
        "published": True,
        "index_version": built["index_version"],
        "model_version": built["model_version"],
    }


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
}
PROGRESS_STEPS = {"ingest", "train", "evaluate", "build_index"}


def run_step(name: str, cfg: Config, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run one named step."""
    if name not in STEPS:
        raise InputError(f"unknown step; known: {', '.join(STEPS)}", field="step", value=name)
    if name in PROGRESS_STEPS:
        return STEPS[name](cfg, run, progress=progress)
    return STEPS[name](cfg, run)
