"""The promote step: build and validate the challenger's index, gate it against the
champion and the floors, then move the `champion` alias and publish its index together.
A rejected challenger leaves the registry aliases and the published index as they were."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from evaluation.gate import decide
from evaluation.registry import CHAMPION, alias_version, record_decision, version_metrics
from evaluation.registry import rollback as registry_rollback
from evaluation.tracking import registry_client, tracking_uri
from features.ingest import load_dataset
from features.split import split_dataset
from features.transforms import build_features
from followrec.config import Config
from followrec.errors import InputError
from indexing.build import build_index_version
from indexing.store import publish, read_manifest, read_pointer
from indexing.store import rollback as index_rollback


def index_root(cfg: Config, run_dir: Path) -> Path:
    """Where versioned indexes live."""
    return Path(cfg.index.root) if cfg.index.root else run_dir / "indexes"


def client_for(cfg: Config, run_dir: Path) -> MlflowClient:
    """The registry the run registered its model in."""
    return registry_client(tracking_uri(cfg.mlflow.tracking_uri, run_dir))


def run(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Gate the model that `followrec evaluate --out RUN_DIR` registered."""
    run_dir = Path(run_dir)
    registered_path = run_dir / "registered.json"
    if not registered_path.exists():
        raise InputError(
            "no registered model here: run `followrec evaluate` with MLflow on "
            "and the two_tower variant first",
            path=str(registered_path),
        )
    registered = json.loads(registered_path.read_text())
    report = json.loads((run_dir / "report.json").read_text())
    challenger = report["sources"][registered["variant"]]
    client = client_for(cfg, run_dir)
    champion = alias_version(client, CHAMPION)
    champion_metrics = version_metrics(champion) if champion is not None else None

    ds = load_dataset(cfg, progress=progress)
    split = split_dataset(ds, cfg.split)
    tables = build_features(
        ds.accounts, split.train, split.train_engagements, cfg.features, ds.feature_kinds
    )
    version = str(registered["version"])
    index_version = f"model-v{version}"
    root = index_root(cfg, run_dir)
    manifest = build_index_version(
        run_dir / "models" / registered["variant"],
        tables,
        root,
        index_version,
        cfg.index.target_recall,
        cfg.index.kind,
        cfg.index.sample_users,
    )
    manifest["model_version"] = version
    decision = decide(
        challenger,
        champion_metrics,
        {"recall@100": cfg.gate.floor_recall_at_100, "map@100": cfg.gate.floor_map_at_100},
        manifest["ann_recall_at_100"],
        cfg.index.target_recall,
    )
    promoted = record_decision(client, version, decision, index_version)
    if promoted:
        publish(root, index_version)
    return {
        "model_version": version,
        "promoted": promoted,
        "reasons": decision.reasons,
        "index": manifest,
        "published_index": (read_pointer(root) or {}).get("current"),
    }


def status(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Champion, its metrics and index manifest, and every version's gate decision."""
    run_dir = Path(run_dir)
    from evaluation.registry import status as registry_status

    out = registry_status(client_for(cfg, run_dir))
    pointer = read_pointer(index_root(cfg, run_dir))
    out["published_index"] = pointer
    if out["champion"] and out["champion"]["index_version"]:
        out["champion"]["index"] = read_manifest(
            index_root(cfg, run_dir), out["champion"]["index_version"]
        )
    return out


def rollback(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Restore the previous champion and its index together."""
    run_dir = Path(run_dir)
    try:
        version = registry_rollback(client_for(cfg, run_dir))
    except ValueError as exc:
        raise InputError(str(exc), field="champion") from None
    index_version = index_rollback(index_root(cfg, run_dir))
    return {"champion": version, "published_index": index_version}
