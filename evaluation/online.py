"""Online experiments around the registry: create one (checking every arm can serve: a
version arm gets its own index built, the blend arm its table), report it (JSON, MLflow
table + plot), and decide a canary: roll the arm back when a guardrail fails, or move
`champion` to the canary's version when its online lift is significant."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pandas as pd

from followrec.core.atomic import atomic_write
from followrec.core.config import Config
from followrec.core.errors import InputError
from followrec.evaluation import experiments as analysis
from followrec.evaluation.exposures import (
    LEGACY_BLEND,
    LIVE,
    PROMOTED,
    ROLLED_BACK,
    STOPPED,
    Arm,
    Experiment,
    ExperimentStore,
    store_url,
)
from followrec.features.ingest import load_split_features
from followrec.indexing.build import build_index_version
from followrec.indexing.store import publish, version_name
from followrec.registry.aliases import CHAMPION, alias_version, record_decision
from followrec.registry.gate import Decision
from followrec.registry.index_artifacts import upload
from followrec.registry.promote import client_for, index_root, local_index, model_dir_of
from followrec.registry.tracking import MODEL_NAME, Tracker, tracking_uri

BLEND_DEPTH = 200  # blend list length kept per user (k of a request is at most this)


def open_store(cfg: Config, run_dir: Path) -> ExperimentStore:
    return ExperimentStore(store_url(cfg.experiments.store, run_dir))


def _stored_index(cfg: Config, run_dir: Path, version: str) -> bool:
    """Whether the version's own index is here or in the registry (fetched if so)."""
    try:
        local_index(cfg, run_dir, version, version_name(version))
    except InputError:
        return False
    return True


def create(
    cfg: Config,
    run_dir: Path,
    name: str,
    arms: list[Arm],
    control: str,
    canary: str | None = None,
    min_users_per_arm: int | None = None,
    progress: bool = True,
) -> Experiment:
    """Check the definition, make every arm servable, then store it as running."""
    exp = Experiment(
        name=name,
        arms=tuple(arms),
        salt=secrets.token_hex(8),
        control=control,
        min_users_per_arm=min_users_per_arm or cfg.experiments.min_users_per_arm,
        canary=canary,
    )
    store = open_store(cfg, run_dir)
    live = store.live()
    if live is not None:  # fail before any slow preparation
        raise InputError(
            f"experiment {live.name!r} is running: stop it first (`followrec experiment stop`)",
            field="name",
            value=name,
        )
    client = client_for(cfg, run_dir)
    if alias_version(client, CHAMPION) is None:
        raise InputError("no champion in the registry: run the training DAG first", field="arms")
    versions = {a.model_version for a in arms if a.model_version is not None}
    known = {str(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'")}
    for version in sorted(versions):
        if version not in known:
            raise InputError("no such registered model version", field="arms", value=f"v{version}")
    missing = [v for v in sorted(versions) if not _stored_index(cfg, run_dir, v)]
    if missing:
        tables = load_split_features(cfg, progress=progress)[2]
        for version in missing:
            build_index_version(
                model_dir_of(cfg, run_dir, version),
                version,
                tables,
                index_root(cfg, run_dir),
                version_name(version),
                cfg.index.target_recall,
                cfg.index.kind,
                cfg.index.sample_users,
            )
            upload(client, version, index_root(cfg, run_dir), version_name(version))
    if any(a.target == LEGACY_BLEND for a in arms):
        analysis.write_blend_table(cfg, run_dir, BLEND_DEPTH, progress=progress)
    return store.create(exp)


def stop(cfg: Config, run_dir: Path, name: str, reason: str = "stopped by hand") -> Experiment:
    return open_store(cfg, run_dir).set_status(name, STOPPED, reason)


def _popularity(run_dir: Path) -> pd.Series | None:
    """Follower-count percentile per account (what 'popularity of what was followed' reads)."""
    path = run_dir / "features" / "producer.parquet"
    if not path.exists():
        return None
    counts = pd.read_parquet(path, columns=["account_id", "follower_count"])
    return counts.set_index("account_id")["follower_count"].rank(pct=True)


def _attributes(cfg: Config, run_dir: Path) -> pd.DataFrame | None:
    """The account attribute columns named in eval.groups, by account id."""
    if not cfg.eval.groups:
        return None
    path = Path(cfg.data.parquet_dir or run_dir / "raw") / "accounts.parquet"
    accounts = pd.read_parquet(path)
    missing = [c for c in cfg.eval.groups if c not in accounts.columns]
    if missing:
        raise InputError("not an account attribute", field="eval.groups", value=missing[0])
    return accounts.set_index("account_id")[list(cfg.eval.groups)]


def report(cfg: Config, run_dir: Path, name: str, log_to_mlflow: bool = True) -> dict[str, Any]:
    """The experiment's report, written to RUN/experiments/report-NAME.json and logged to
    MLflow as run `experiment-NAME` (metrics per arm, the comparisons table, a lift plot)."""
    store = open_store(cfg, run_dir)
    rep = analysis.report(
        store, name, cfg, _popularity(run_dir), attributes=_attributes(cfg, run_dir)
    )
    folder = run_dir / "experiments"
    path = folder / f"report-{name}.json"
    atomic_write(path, json.dumps(rep, indent=2, default=str))
    if log_to_mlflow and cfg.mlflow.enabled:
        uri = tracking_uri(cfg.mlflow.tracking_uri, run_dir)
        with Tracker(True, uri, cfg.mlflow.experiment, run_dir, f"experiment-{name}") as tracker:
            tracker.set_tags({"followrec.experiment": name, "status": rep["status"]})
            tracker.log_metrics(
                {
                    f"{arm}.{metric}": float(values[metric])
                    for arm, values in rep["arms"].items()
                    for metric in ("users", "impressions", "follows", *analysis.METRICS)
                    if values.get(metric) is not None
                }
            )
            table = folder / f"comparisons-{name}.csv"
            analysis.report_table(rep).to_csv(table, index=False)
            tracker.log_artifact(table)
            tracker.log_artifact(analysis.plot_report(rep, folder / f"lift-{name}.png"))
            tracker.log_artifact(path)
            rep["mlflow_run_id"] = tracker.run_id
    return rep


def decide(cfg: Config, run_dir: Path, name: str) -> dict[str, Any]:
    """Act on a running canary: rollback (the arm stops; the champion stays), promote
    (the canary's version becomes champion with its index; the experiment ends), or
    continue. Experiments that are not canaries are left alone."""
    store = open_store(cfg, run_dir)
    exp = store.get(name)
    if exp.status != LIVE:
        return {"experiment": name, "action": "none", "reasons": [f"experiment is {exp.status}"]}
    rep = analysis.report(store, name, cfg)
    verdict = analysis.canary_verdict(rep, exp, cfg.experiments.guardrail_max_drop)
    reason = "; ".join(verdict["reasons"])
    if verdict["action"] == "rollback":
        store.set_status(name, ROLLED_BACK, reason)
    elif verdict["action"] == "promote":
        version = exp.arm(exp.canary or "").model_version
        if version is None:
            verdict = {"action": "continue", "reasons": ["the canary arm names no model version"]}
        else:
            index_version = version_name(version)
            client = client_for(cfg, run_dir)
            record_decision(client, version, Decision(True, [f"online: {reason}"]), index_version)
            publish(local_index(cfg, run_dir, version, index_version), index_version)
            store.set_status(name, PROMOTED, reason)
    out = {"experiment": name, **verdict}
    atomic_write(run_dir / "experiments" / f"decision-{name}.json", json.dumps(out, indent=2))
    return out


def live_names(cfg: Config, run_dir: Path) -> list[str]:
    """The experiment the steps act on: the configured one, else the running one."""
    if cfg.experiments.name:
        return [cfg.experiments.name]
    live = open_store(cfg, run_dir).live()
    return [live.name] if live is not None else []


def report_step(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """DAG step: report the running (or named) experiment."""
    run_dir = Path(run_dir)
    reports = {n: report(cfg, run_dir, n) for n in live_names(cfg, run_dir)}
    return {
        name: {"arms": {a: v["users"] for a, v in r["arms"].items()}, "warnings": r["warnings"]}
        for name, r in reports.items()
    }


def decide_step(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """DAG step: decide the running (or named) canary."""
    run_dir = Path(run_dir)
    return {n: decide(cfg, run_dir, n) for n in live_names(cfg, run_dir)}


def summary(cfg: Config, run_dir: Path) -> list[dict[str, Any]]:
    """Each experiment with its status and, where a report was written, its headline."""
    out = []
    for exp in open_store(cfg, run_dir).all():
        path = run_dir / "experiments" / f"report-{exp.name}.json"
        headline = None
        if path.exists():
            rep = json.loads(path.read_text())
            headline = [c for c in rep["comparisons"] if c["metric"] == "follow_through_rate"]
        out.append(
            {
                "name": exp.name,
                "status": exp.status,
                "reason": exp.reason,
                "arms": {a.name: f"{a.target} {a.share:.0%}" for a in exp.arms},
                "follow_through": headline,
            }
        )
    return out
