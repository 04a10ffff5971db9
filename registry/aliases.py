"""The model registry with aliases: `champion` and `previous_champion`, never stages.
Promotion and rollback are one call each and leave their reason in the version's tags."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from followrec.registry.gate import Decision
from followrec.registry.tracking import MODEL_NAME

CHAMPION = "champion"
PREVIOUS = "previous_champion"


def alias_version(client: MlflowClient, alias: str, name: str = MODEL_NAME) -> Any | None:
    """The version an alias points at, or None."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def registered_model_dir(client: MlflowClient, version: str, cache: Path) -> Path:
    """The weights registered as `version` (the MLflow model's `model_dir` artifact),
    downloaded once into cache/v<version>. Every reader after registration (index build,
    index checks, refresh, serving) loads them from here, never from the training folder
    that the next training run overwrites."""
    import mlflow

    target = Path(cache) / f"v{version}"
    if not (target / "MLmodel").exists():
        tmp = target.with_name(f".{target.name}.{threading.get_ident()}")
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(MODEL_NAME, str(version)),
            dst_path=str(tmp),
            # The client's server, not the process-wide default (a tracking server's
            # mlflow-artifacts:/ URIs resolve only through it).
            tracking_uri=client.tracking_uri,
        )
        if not target.exists():  # another reader may have finished first
            Path(local).replace(target)
        shutil.rmtree(tmp, ignore_errors=True)
    mlmodel = yaml.safe_load((target / "MLmodel").read_text())
    relative = mlmodel["flavors"]["python_function"]["artifacts"]["model_dir"]["path"]
    return target / relative


def version_metrics(version: Any) -> dict[str, float]:
    """Gated metrics stored in a version's tags at registration."""
    out = {}
    for metric, tag in (("recall@100", "recall_at_100"), ("map@100", "map_at_100")):
        if tag in version.tags:
            out[metric] = float(version.tags[tag])
    return out


def record_decision(
    client: MlflowClient,
    version: str,
    decision: Decision,
    index_version: str | None,
    name: str = MODEL_NAME,
) -> bool:
    """Tag the decision; when it promotes, move `champion` and keep the old one as
    `previous_champion`. Returns whether the version was promoted."""
    client.set_model_version_tag(
        name, version, "gate.decision", "promoted" if decision.promote else "rejected"
    )
    client.set_model_version_tag(name, version, "gate.reasons", "; ".join(decision.reasons))
    if not decision.promote:
        return False
    current = alias_version(client, CHAMPION, name)
    if current is not None and current.version != version:
        client.set_registered_model_alias(name, PREVIOUS, current.version)
    if index_version is not None:
        client.set_model_version_tag(name, version, "index.version", index_version)
    client.set_registered_model_alias(name, CHAMPION, version)
    return True


def rollback(client: MlflowClient, name: str = MODEL_NAME) -> str:
    """Point `champion` back at `previous_champion`; returns the restored version."""
    previous = alias_version(client, PREVIOUS, name)
    if previous is None:
        raise ValueError("no previous champion to roll back to")
    current = alias_version(client, CHAMPION, name)
    if current is not None:
        client.set_model_version_tag(name, current.version, "gate.decision", "rolled back")
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    client.delete_registered_model_alias(name, PREVIOUS)
    return str(previous.version)


def status(client: MlflowClient, name: str = MODEL_NAME) -> dict[str, Any]:
    """Champion (version, metrics, index version) and every version with its decision."""
    champion = alias_version(client, CHAMPION, name)
    versions = sorted(
        client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True
    )
    return {
        "model": name,
        "champion": None
        if champion is None
        else {
            "version": champion.version,
            "metrics": version_metrics(champion),
            "index_version": champion.tags.get("index.version"),
            "schema_hash": champion.tags.get("schema_hash"),
        },
        "versions": [
            {
                "version": v.version,
                "decision": v.tags.get("gate.decision", "pending"),
                "reasons": v.tags.get("gate.reasons", ""),
                "metrics": version_metrics(v),
            }
            for v in versions
        ],
    }
