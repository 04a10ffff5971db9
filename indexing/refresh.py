"""Index refresh: re-embed every producer of a new feature snapshot with an already
registered model and write a new index version for it, without retraining."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from followrec.core.config import IndexConfig
from followrec.features.transforms import FeatureTables
from followrec.indexing.build import build_index_version
from followrec.indexing.store import version_name


def refresh_version(
    root: Path, model_version: str, model_dir: Path, tables: FeatureTables, cfg: IndexConfig
) -> dict[str, Any]:
    """A new index version for `model_version` (its registered weights in model_dir) on these
    feature tables. Accounts newer than the model (no id row) are embedded from their other
    features; the result counts them (`new_accounts`, kept in refresh.json)."""
    model = json.loads((Path(model_dir) / "model.json").read_text())
    ids = tables.producer["account_id"].to_numpy()
    new_accounts = int((ids >= model["n_ids"]["accounts"]).sum())
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
    # The manifest names the model version.
    return {**manifest, "index_version": version, "new_accounts": new_accounts}
