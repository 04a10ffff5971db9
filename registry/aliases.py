"""The model registry with aliases: `champion` and `previous_champion`, never stages.
Promotion and rollback are one call each and leave their reason in the version's tags."""

from __future__ import annotations

from typing import Any

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
