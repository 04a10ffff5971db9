"""The bridge from Airflow Params (what a user sets when triggering a DAG in the UI) to the
pipeline's steps: each DAG task is one `run(task, params)` call, the same function that
`followrec step TASK --run DIR` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from followrec import pipeline
from followrec.core.config import Config, load_config
from followrec.step_names import FEATURES_STEPS

# Params -> config settings (only those a DAG defines are applied).
SETTINGS = {
    "dataset": "data.dataset",
    "twitch_languages": "data.twitch_languages",
    "edges": "data.edges",
    "nodes": "data.nodes",
    "parquet_dir": "data.parquet_dir",
    "online_store": "feast.online_store",
    "epochs": "train.epochs",
    "ks": "eval.ks",
    "variants": "eval.two_tower",
    "floor_recall_at_100": "gate.floor_recall_at_100",
    "floor_map_at_100": "gate.floor_map_at_100",
    "target_ann_recall": "index.target_recall",
    "tracking_uri": "mlflow.tracking_uri",
    "experiment": "experiments.name",
}
LIST_PARAMS = {"twitch_languages", "ks", "variants"}


def config_from_params(params: dict[str, Any], fresh: bool = False) -> tuple[Config, Path]:
    """A step's config and run folder. The features DAG starts from the defaults (`fresh`);
    the training and refresh DAGs from the config the features DAG saved in the run folder."""
    run = Path(params["run_dir"]).resolve()
    overrides = []
    for param, setting in SETTINGS.items():
        value = params.get(param)
        if value in (None, "") or (param in LIST_PARAMS and not value):
            continue
        overrides.append(f"{setting}={list(value) if param in LIST_PARAMS else value}")
    overrides += list(params.get("extra_settings") or [])
    saved = run / "config.yaml"
    base = None if fresh or not saved.exists() else saved
    return load_config(base, overrides), run


def params_for_run(
    params: dict[str, Any], conf: dict[str, Any], triggering: list[dict[str, Any]]
) -> dict[str, Any]:
    """A DAG run's Params, with the run folder an Asset event handed over when the run was
    triggered by that event and its trigger did not name a folder itself (the Param
    default would otherwise point it at another folder than the features run filled)."""
    handed = [extra for extra in triggering if extra.get("run_dir")]
    if "run_dir" in conf or not handed:
        return dict(params)
    return {**params, "run_dir": handed[-1]["run_dir"]}


def handoff(params: dict[str, Any]) -> dict[str, Any]:
    """The `extra` of the features Asset event: the run folder and the feature snapshot
    (the folder RUN/snapshot points at) that the features run published."""
    run_dir = Path(params["run_dir"]).resolve()
    snapshot = run_dir / "snapshot"
    return {
        "run_dir": str(run_dir),
        "snapshot": snapshot.resolve().name if snapshot.is_symlink() else None,
    }


def run(task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one DAG task's step with the DAG run's Params."""
    cfg, run_dir = config_from_params(params, fresh=task in FEATURES_STEPS)
    return pipeline.run_step(task, cfg, run_dir, progress=False)
