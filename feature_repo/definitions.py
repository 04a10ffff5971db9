"""Feast definitions for `feast plan` / `feast apply` in this folder: the reviewable schema of
the default feature tables (Twitch, default tower spec). The pipeline applies the same objects,
built by followrec.features.feast_definitions from the tables it writes; a test fails when those
tables and this schema differ, so a feature change shows up here in review.

The sources point at $FOLLOWREC_FEATURE_DIR (default: ../runs/pipeline/features); nothing is
read at import time."""

from __future__ import annotations

import os
from pathlib import Path

from feast.types import Array, Float32, Int64

from followrec.features.feast_definitions import objects

SCHEMA_VERSION = "65fe5b37"
COLUMNS = {
    "consumer": {
        "language": Int64,
        "country": Int64,
        "topics": Array(Int64),
        "follow_count": Int64,
        "follow_count_bucket": Int64,
        "recent_follows": Array(Int64),
        "follows": Array(Int64),
        "engagement_count": Int64,
        "engaged_accounts": Int64,
        # Account attributes (--nodes columns, Twitch's target file) reach both towers;
        # categoricals as vocabulary codes (0 = unknown).
        "views": Int64,
        "partner": Int64,
        "mature": Int64,
    },
    "producer": {
        "language": Int64,
        "country": Int64,
        "topics": Array(Int64),
        "follower_count": Int64,
        "log_follower_count": Float32,
        "account_age_days": Float32,
        "follower_language_dist": Array(Float32),
        "follower_country_dist": Array(Float32),
        "follower_countries": Int64,
        "follower_same_language_share": Float32,
        "follower_top_topics": Array(Int64),
        "views": Int64,
        "partner": Int64,
        "mature": Int64,
    },
}
FEATURE_DIR = os.environ.get(
    "FOLLOWREC_FEATURE_DIR", str(Path(__file__).resolve().parents[1] / "runs/pipeline/features")
)

user, account, consumer_features, consumer_service, producer_features, producer_service = objects(
    COLUMNS, FEATURE_DIR, SCHEMA_VERSION
)
