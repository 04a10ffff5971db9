"""The ordered steps, shared by the CLI and the Airflow DAGs: each DAG task is one call here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from followrec.config import Config, load_config

# DAG task id -> the CLI command that runs the same step function.
TASK_COMMANDS = {"evaluate": "evaluate", "promote": "promote"}


def config_from_params(params: dict[str, Any]) -> tuple[Config, Path]:
    """A run's config and output folder from Airflow Params (what a user sets in the UI)."""
    overrides = [
        f"data.dataset={params['dataset']}",
        f"data.twitch_languages={list(params['twitch_languages'])}",
        f"train.epochs={params['epochs']}",
        f"eval.ks={list(params['ks'])}",
        f"gate.floor_recall_at_100={params['floor_recall_at_100']}",
        f"gate.floor_map_at_100={params['floor_map_at_100']}",
        f"index.target_recall={params['target_ann_recall']}",
    ]
    if params.get("edges"):
        overrides.append(f"data.edges={params['edges']}")
    if params.get("tracking_uri"):
        overrides.append(f"mlflow.tracking_uri={params['tracking_uri']}")
    overrides += list(params.get("extra_settings") or [])
    return load_config(None, overrides), Path(params["out_dir"]).resolve()


def evaluate(params: dict[str, Any]) -> dict[str, Any]:
    """Train the two-tower variants and score every source (`followrec evaluate`)."""
    from evaluation import evaluate as step

    cfg, out = config_from_params(params)
    result = step.run(cfg, out, progress=False)
    result.pop("table", None)
    return result


def promote(params: dict[str, Any]) -> dict[str, Any]:
    """Index, validate, gate and promote the registered model (`followrec promote`)."""
    from evaluation import promote as step

    cfg, out = config_from_params(params)
    return (
        step.run(load_config(out / "config.yaml"), out, progress=False)
        if (out / "config.yaml").exists()
        else step.run(cfg, out, progress=False)
    )
