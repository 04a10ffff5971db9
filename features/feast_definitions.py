"""Feast objects for followrec: entities `user` and `account`, Parquet sources over the
feature tables that the features step writes, one feature view and one feature service per
tower (named with the feature schema version), and a push source for real-time user events.

`objects(columns, feature_dir)` builds them from an explicit column schema (name -> Feast
type per tower); `build(feature_dir)` reads that schema off the written tables, so a column
added to the feature tables becomes a Feast feature without editing code. The reviewable
schema for the default Twitch tables is spelled out in feature_repo/definitions.py."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float32, Float64, Int64, String

TIMESTAMP = "event_timestamp"
KEYS = {"consumer": "user_id", "producer": "account_id"}
PUSH_SOURCE = "user_events_push"

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="an account as a consumer (someone who follows)",
)
account = Entity(
    name="account",
    join_keys=["account_id"],
    value_type=ValueType.INT64,
    description="an account as a producer (someone who can be followed)",
)
ENTITIES = {"consumer": user, "producer": account}

_SCALARS = {
    pa.int64(): Int64,
    pa.int32(): Int64,
    pa.float32(): Float32,
    pa.float64(): Float64,
    pa.string(): String,
    pa.large_string(): String,
    pa.bool_(): Bool,
}


def feast_type(name: str, arrow_type: pa.DataType):  # noqa: ANN201 - a Feast type object
    """The Feast type of a feature table column."""
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        inner = _SCALARS.get(arrow_type.value_type)
        if inner is not None and inner is not String:
            return Array(inner)
    elif arrow_type in _SCALARS:
        return _SCALARS[arrow_type]
    raise TypeError(f"feature column {name!r} has type {arrow_type}, which Feast cannot hold")


def fields(schema: pa.Schema, key: str) -> list[Field]:
    """Every column except the join key and the timestamp, as Feast fields."""
    skip = {key, TIMESTAMP}
    return [
        Field(name=f.name, dtype=feast_type(f.name, f.type)) for f in schema if f.name not in skip
    ]


def schema_version(feature_dir: Path) -> str:
    """A short hash of both tables' column names and types: it names the feature services,
    so a model is always served the columns it was trained on."""
    digest = hashlib.sha256()
    for tower in ("consumer", "producer"):
        for f in pq.read_schema(feature_dir / f"{tower}.parquet"):
            digest.update(f"{tower}.{f.name}:{f.type};".encode())
    return digest.hexdigest()[:8]


def service_name(tower: str, version: str) -> str:
    """The feature service a tower reads: followrec_<tower>_v<schema version>."""
    return f"followrec_{tower}_v{version}"


def table_columns(feature_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Per tower, each feature column's Feast type, read off the written Parquet tables."""
    feature_dir = Path(feature_dir)
    out = {}
    for tower, key in KEYS.items():
        schema = pq.read_schema(feature_dir / f"{tower}.parquet")
        out[tower] = {f.name: f.dtype for f in fields(schema, key)}
    return out


def objects(columns: dict[str, dict[str, Any]], feature_dir: str | Path, version: str) -> list:
    """Every Feast object for feature tables with these columns under feature_dir."""
    feature_dir = Path(feature_dir).absolute()  # through RUN/features: it follows snapshots
    out: list = [user, account]
    for tower in KEYS:
        source = FileSource(
            name=f"{tower}_features_source",
            path=str(feature_dir / f"{tower}.parquet"),
            timestamp_field=TIMESTAMP,
        )
        if tower == "consumer":
            # Real-time user events are pushed here; the batch source backs it offline.
            source = PushSource(name=PUSH_SOURCE, batch_source=source)
        tags = {"tower": tower, "schema_version": version}
        view = FeatureView(
            name=f"{tower}_features",
            entities=[ENTITIES[tower]],
            ttl=timedelta(0),  # features stay valid until the next snapshot replaces them
            schema=[Field(name=n, dtype=t) for n, t in columns[tower].items()],
            source=source,
            online=True,
            tags=tags,
        )
        out += [view, FeatureService(name=service_name(tower, version), features=[view], tags=tags)]
    return out


def build(feature_dir: str | Path) -> list:
    """Every Feast object for the feature tables written under feature_dir."""
    return objects(table_columns(feature_dir), feature_dir, schema_version(Path(feature_dir)))
