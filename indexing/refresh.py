"""Index refresh: re-embed every producer of a new feature snapshot with an already
registered model and write a new index version for it, without retraining."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from followrec.core.config import IndexConfig
from followrec.core.errors import InputError
from followrec.features.transforms import FeatureTables
from followrec.indexing.build import build_index_version
from followrec.indexing.store import version_name


def refresh_version(
    root: Path, model_version: str, model_dir: Path, tables: FeatureTables, cfg: IndexConfig
) -> dict[str, Any]:
    """A new index version for `model_version` (its registered weights in model_dir) on these
    feature tables; refused when the snapshot has accounts the model cannot embed."""
    model = json.loads((Path(model_dir) / "model.json").read_text())
    if len(tables.producer) > model["n_ids"]["accounts"]:
        raise InputError(
            "the feature snapshot has accounts the champion has no embedding for; "
            "retrain (followrec_training) instead of refreshing",
            field="accounts",
            value=len(tables.producer),
        )
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S")
    version = version_name(model_version, refresh=stamp)
    manifest = build_index_version(
        model_dir,
        model_version,
        tables,
        root,
        version,
        cfg.target_recall,
        cfg.kind,
        cfg.sample_users,
    )
    return {**manifest, "index_version": version}  # the manifest names the model version
