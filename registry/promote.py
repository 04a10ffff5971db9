"""The promote step: build and validate the challenger's index, gate it against the
champion and the floors, then move the `champion` alias and publish its index together.
A rejected challenger leaves the registry aliases and the published index as they were."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient

from followrec.core.atomic import atomic_write
from followrec.core.config import Config
from followrec.core.errors import InputError
from followrec.core.faults import crash_point
from followrec.features.ingest import load_split_features
from followrec.features.transforms import FeatureTables
from followrec.indexing.build import build_index_version
from followrec.indexing.refresh import refresh_version
from followrec.indexing.store import (
    load_version,
    publish,
    read_manifest,
    read_pointer,
    version_name,
)
from followrec.indexing.store import rollback as index_rollback
from followrec.registry.aliases import (
    CHAMPION,
    alias_version,
    record_decision,
    registered_model_dir,
    version_metrics,
)
from followrec.registry.aliases import rollback as registry_rollback
from followrec.registry.gate import Decision, decide, fairness_check
from followrec.registry.index_artifacts import fetch, upload
from followrec.registry.tracking import MODEL_NAME, registry_client, tracking_uri


def index_root(cfg: Config, run_dir: Path) -> Path:
    """Where versioned indexes live."""
    return Path(cfg.index.root) if cfg.index.root else run_dir / "indexes"


def client_for(cfg: Config, run_dir: Path) -> MlflowClient:
    """The registry the run registered its model in."""
    return registry_client(tracking_uri(cfg.mlflow.tracking_uri, run_dir))


def local_index(cfg: Config, run_dir: Path, model_version: str, index_version: str) -> Path:
    """The index root, holding `index_version` (fetched from the model version's registry
    artifacts when this host has no copy: a task may run on another worker than the build)."""
    root = index_root(cfg, run_dir)
    fetch(client_for(cfg, run_dir), model_version, root, index_version)
    return root


def model_dir_of(cfg: Config, run_dir: Path, version: str) -> Path:
    """The weights registered as `version`, from the registry (cached in RUN/registered)."""
    return registered_model_dir(client_for(cfg, run_dir), version, run_dir / "registered")


def _registered(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "registered.json"
    if not path.exists():
        raise InputError(
            "no registered model here: run `followrec evaluate` with MLflow on "
            "and the two_tower variant first",
            path=str(path),
        )
    return json.loads(path.read_text())


def _floors(cfg: Config) -> dict[str, float]:
    return {"recall@100": cfg.gate.floor_recall_at_100, "map@100": cfg.gate.floor_map_at_100}


def gate(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Compare the challenger's offline metrics with the champion and the floors. A rejected
    challenger is tagged right away; the index steps then have nothing to do."""
    run_dir = Path(run_dir)
    registered = _registered(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    challenger = report["sources"][registered["variant"]]
    client = client_for(cfg, run_dir)
    champion = alias_version(client, CHAMPION)
    champion_metrics = version_metrics(champion) if champion is not None else None
    version = str(registered["version"])
    if champion is not None and str(champion.version) == version:  # a re-run of this step
        out = {
            "model_version": version,
            "passed": True,
            "already_champion": True,
            "reasons": ["already the champion"],
            "challenger": {m: challenger.get(m) for m in ("recall@100", "map@100")},
            "champion_version": version,
            "champion": champion_metrics,
        }
        atomic_write(run_dir / "gate.json", json.dumps(out, indent=2))
        return out
    # The index is judged later; here only the metric conditions count.
    decision = decide(challenger, champion_metrics, _floors(cfg), 1.0, 0.0)
    decision = fairness_check(decision, challenger, cfg.gate.max_disparity)
    reasons = [r for r in decision.reasons if not r.startswith("index ANN recall")]
    out = {
        "model_version": version,
        "passed": decision.promote,
        "reasons": reasons,
        "challenger": {m: challenger.get(m) for m in ("recall@100", "map@100")},
        "champion_version": None if champion is None else str(champion.version),
        "champion": champion_metrics,
    }
    if not decision.promote:
        record_decision(client, version, Decision(False, reasons), None)
    atomic_write(run_dir / "gate.json", json.dumps(out, indent=2))
    return out


def _gate_result(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "gate.json"
    if not path.exists():
        raise InputError("the gate step has not run for this model", path=str(path))
    return json.loads(path.read_text())


def build_index(
    cfg: Config,
    run_dir: str | Path,
    tables: FeatureTables | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode every producer with the challenger and write its index version (skipped when
    the gate rejected it). `tables` defaults to features rebuilt from the run's dataset."""
    run_dir = Path(run_dir)
    registered = _registered(run_dir)
    gated = _gate_result(run_dir)
    if not gated["passed"]:
        out = {"skipped": "gate rejected the challenger", "model_version": gated["model_version"]}
        atomic_write(run_dir / "index.json", json.dumps(out, indent=2))
        return out
    if tables is None:
        tables = load_split_features(cfg, progress=progress)[2]
    version = str(registered["version"])
    root = index_root(cfg, run_dir)
    client = client_for(cfg, run_dir)
    if gated.get("already_champion"):
        # A re-run: the champion's published index is kept, not rebuilt under its readers.
        root = local_index(cfg, run_dir, version, version_name(version))
        manifest = {**read_manifest(root, version_name(version)), "model_version": version}
        atomic_write(run_dir / "index.json", json.dumps(manifest, indent=2))
        return manifest
    manifest = build_index_version(
        model_dir_of(cfg, run_dir, version),
        version,
        tables,
        root,
        version_name(version),
        cfg.index.target_recall,
        cfg.index.kind,
        cfg.index.sample_users,
    )
    manifest["artifact_path"] = upload(client, version, root, version_name(version))
    atomic_write(run_dir / "index.json", json.dumps(manifest, indent=2))
    return manifest


def validate_index(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Reload the written index (checksum), and check it against its model: every producer
    present, the tower's dimension, ANN recall at or above the target, a search answering
    with known ids. Writes index_validation.json."""
    run_dir = Path(run_dir)
    built = json.loads((run_dir / "index.json").read_text())
    if "skipped" in built:
        return built
    index_version = version_name(built["model_version"])
    out = index_checks(
        local_index(cfg, run_dir, built["model_version"], index_version),
        index_version,
        cfg.index.target_recall,
        built["count"],
        model_dir_of(cfg, run_dir, built["model_version"]),
    )
    atomic_write(run_dir / "index_validation.json", json.dumps(out, indent=2))
    return out


def index_checks(
    root: Path, index_version: str, target_recall: float, expected_count: int, model_dir: Path
) -> dict[str, Any]:
    """What an index must pass before it is published (model_dir: the registered weights
    of the version it was built for)."""
    index, account_ids, manifest = load_version(root, index_version)
    model = json.loads((Path(model_dir) / "model.json").read_text())
    dimension = model.get("dimension", model["train_config"]["output_dim"])
    probe = np.random.default_rng(0).standard_normal((4, index.d)).astype(np.float32)
    _, found = index.search(probe, min(10, index.ntotal))
    checks = {
        "count": index.ntotal == expected_count == len(account_ids),
        "dimension": index.d == dimension,
        "ann_recall": manifest["ann_recall_at_100"] >= target_recall,
        "search": bool((found >= 0).all() and (found < len(account_ids)).all()),
    }
    return {
        "index_version": index_version,
        "passed": all(checks.values()),
        "checks": checks,
        "ann_recall_at_100": manifest["ann_recall_at_100"],
        "count": int(index.ntotal),
        "dimension": int(index.d),
    }


def promote(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """The final decision: the gate's metric conditions plus the index checks. Promotion
    moves the `champion` alias and publishes the index; otherwise neither changes."""
    run_dir = Path(run_dir)
    gated = _gate_result(run_dir)
    root = index_root(cfg, run_dir)
    version = gated["model_version"]
    if not gated["passed"]:
        out = {"model_version": version, "promoted": False, "reasons": gated["reasons"]}
    elif gated.get("already_champion"):
        out = {"model_version": version, "promoted": True, "reasons": gated["reasons"]}
    else:
        checked = json.loads((run_dir / "index_validation.json").read_text())
        built = json.loads((run_dir / "index.json").read_text())
        challenger_metrics = {k: v for k, v in gated["challenger"].items() if v is not None}
        decision = decide(
            challenger_metrics,
            gated["champion"],
            _floors(cfg),
            built["ann_recall_at_100"],
            cfg.index.target_recall,
        )
        failed = [name for name, ok in checked["checks"].items() if not ok]
        if failed:
            decision = Decision(
                False, [*decision.reasons, f"index checks failed: {', '.join(failed)}"]
            )
        client = client_for(cfg, run_dir)
        promoted = record_decision(client, version, decision, checked["index_version"])
        if promoted:
            crash_point()  # alias moved, the local pointer not yet
            publish(
                local_index(cfg, run_dir, version, checked["index_version"]),
                checked["index_version"],
            )
        out = {
            "model_version": version,
            "promoted": promoted,
            "reasons": decision.reasons,
            "index": built,
        }
    out["published_index"] = (read_pointer(root) or {}).get("current")
    atomic_write(run_dir / "promotion.json", json.dumps(out, indent=2))
    return out


def run(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """`followrec promote`: gate, build index, validate index, promote."""
    gate(cfg, run_dir)
    build_index(cfg, run_dir, progress=progress)
    validate_index(cfg, run_dir)
    return promote(cfg, run_dir)


def status(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Champion, its metrics and index manifest, and every version's gate decision."""
    run_dir = Path(run_dir)
    from followrec.registry.aliases import status as registry_status

    out = registry_status(client_for(cfg, run_dir))
    pointer = read_pointer(index_root(cfg, run_dir))
    out["published_index"] = pointer
    champion = out["champion"]
    if champion and champion["index_version"]:
        root = local_index(cfg, run_dir, champion["version"], champion["index_version"])
        champion["index"] = read_manifest(root, champion["index_version"])
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


def _champion_with_index(client: MlflowClient) -> Any:
    champion = alias_version(client, CHAMPION)
    if champion is None or "index.version" not in champion.tags:
        raise InputError(
            "no champion with an index to refresh: run followrec_training first", field="champion"
        )
    return champion


def refresh_index(cfg: Config, run_dir: str | Path, tables: FeatureTables) -> dict[str, Any]:
    """A new index version for the champion on these feature tables (refresh.json)."""
    run_dir = Path(run_dir)
    client = client_for(cfg, run_dir)
    champion = _champion_with_index(client)
    out = refresh_version(
        index_root(cfg, run_dir),
        str(champion.version),
        model_dir_of(cfg, run_dir, str(champion.version)),
        tables,
        cfg.index,
    )
    out["artifact_path"] = upload(
        client, out["model_version"], index_root(cfg, run_dir), out["index_version"]
    )
    atomic_write(run_dir / "refresh.json", json.dumps(out, indent=2))
    return out


def validate_refresh(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """The checks an index passes before promotion, on the refreshed version."""
    run_dir = Path(run_dir)
    built = json.loads((run_dir / "refresh.json").read_text())
    out = index_checks(
        local_index(cfg, run_dir, built["model_version"], built["index_version"]),
        built["index_version"],
        cfg.index.target_recall,
        built["count"],
        model_dir_of(cfg, run_dir, built["model_version"]),
    )
    atomic_write(run_dir / "refresh_validation.json", json.dumps(out, indent=2))
    return out


def publish_refresh(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Publish the refreshed index if it passed and the champion has not changed since."""
    run_dir = Path(run_dir)
    built = json.loads((run_dir / "refresh.json").read_text())
    checked = json.loads((run_dir / "refresh_validation.json").read_text())
    client = client_for(cfg, run_dir)
    champion = alias_version(client, CHAMPION)
    if not checked["passed"]:
        failed = [k for k, ok in checked["checks"].items() if not ok]
        raise InputError(f"refreshed index failed its checks: {', '.join(failed)}", field="index")
    if champion is None or str(champion.version) != built["model_version"]:
        return {"published": False, "reason": "the champion changed during the refresh"}
    root = local_index(cfg, run_dir, built["model_version"], built["index_version"])
    publish(root, built["index_version"])
    crash_point()  # index published, the champion's tag not yet
    client.set_model_version_tag(
        MODEL_NAME, built["model_version"], "index.version", built["index_version"]
    )
    return {
        "published": True,
        "index_version": built["index_version"],
        "model_version": built["model_version"],
    }
