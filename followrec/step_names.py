"""The pipeline's step names, in DAG order. Import-light on purpose: the DAG files and the
CLI's parser read these without loading Feast, torch or pandas."""

from __future__ import annotations

FEATURES_STEPS = (
    "ingest",
    "validate_raw",
    "build_features",
    "validate_features",
    "feast_apply",
    "materialize",
)
TRAINING_STEPS = (
    "training_set",
    "train",
    "evaluate",
    "gate",
    "build_index",
    "validate_index",
    "promote",
)
REFRESH_STEPS = ("refresh_index", "validate_refresh", "publish_refresh")
EXPERIMENT_STEPS = ("experiment_report", "experiment_decide")
ALL_STEPS = FEATURES_STEPS + TRAINING_STEPS + REFRESH_STEPS + EXPERIMENT_STEPS
