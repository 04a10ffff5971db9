"""The Feast side of the pipeline: write the feature tables as Feast sources, apply the
definitions (feast_definitions.py), materialize to the online store, fetch training sets with a
point-in-time join, and read online features with the same definitions."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from followrec.core.atomic import atomic_dir, atomic_write
from followrec.core.config import FeastConfig
from followrec.core.errors import InputError
from followrec.features import feast_definitions as definitions
from followrec.features.transforms import FeatureTables

TOWERS = ("consumer", "producer")
OFFLINE_STORES = ("duckdb", "file")


def write_feature_tables(tables: FeatureTables, path: str | Path) -> dict[str, Any]:
    """consumer.parquet and producer.parquet (stamped with the snapshot time), vocabularies
    and a manifest, in one rename. Returns the manifest."""
    path = Path(path)
    # Microseconds: the DuckDB offline store casts to them and refuses to drop nanoseconds.
    stamp = pd.Timestamp(tables.feature_timestamp or pd.Timestamp("1970-01-01", tz="UTC"))
    stamp = stamp.as_unit("ns").floor("us")
    with atomic_dir(path) as tmp:
        for tower in TOWERS:
            frame = getattr(tables, tower).copy()
            frame[definitions.TIMESTAMP] = stamp
            frame.to_parquet(tmp / f"{tower}.parquet", index=False)
        version = definitions.schema_version(tmp)
        manifest = {
            "schema_version": version,
            "feature_timestamp": stamp.isoformat(),
            "rows": {t: len(getattr(tables, t)) for t in TOWERS},
            "services": {t: definitions.service_name(t, version) for t in TOWERS},
        }
        (tmp / "vocabularies.json").write_text(json.dumps(tables.vocabularies))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def read_feature_tables(path: str | Path) -> FeatureTables:
    """Feature tables written by write_feature_tables (what the training_set step keeps)."""
    path = Path(path)
    manifest = read_manifest(path)
    frames = {
        t: pd.read_parquet(path / f"{t}.parquet").drop(columns=[definitions.TIMESTAMP])
        for t in TOWERS
    }
    return FeatureTables(
        consumer=frames["consumer"],
        producer=frames["producer"],
        vocabularies=json.loads((path / "vocabularies.json").read_text()),
        feature_timestamp=pd.Timestamp(manifest["feature_timestamp"]),
    )


def read_manifest(feature_dir: str | Path) -> dict[str, Any]:
    """The manifest the features step wrote, or a clear error when there is none."""
    path = Path(feature_dir) / "manifest.json"
    if not path.exists():
        raise InputError("no feature tables here: run `followrec features` first", path=str(path))
    return json.loads(path.read_text())


def repo_config(cfg: FeastConfig, feast_dir: Path) -> dict[str, Any]:
    """feature_store.yaml for a run: embedded by default, Redis / SQL registry when set."""
    registry: dict[str, Any] = {
        "registry_type": "file",
        "path": str((feast_dir / "registry.db").resolve()),
    }
    if cfg.registry:
        registry = {"registry_type": "sql", "path": cfg.registry, "cache_ttl_seconds": 0}
    # A materialization that runs, or was killed and awaits its retry, leaves the views
    # MATERIALIZING; readers keep the last materialized values instead of failing.
    registry["serve_features_while_materializing"] = True
    if cfg.online_store == "sqlite":
        online: dict[str, Any] = {
            "type": "sqlite",
            "path": str((feast_dir / "online.db").resolve()),
        }
    elif cfg.online_store == "redis":
        online = {"type": "redis", "connection_string": cfg.redis_connection}
    else:
        raise InputError(
            "unknown online store; expected sqlite or redis",
            field="feast.online_store",
            value=cfg.online_store,
        )
    if cfg.offline_store not in OFFLINE_STORES:
        raise InputError(
            f"unknown offline store; expected one of {', '.join(OFFLINE_STORES)}",
            field="feast.offline_store",
            value=cfg.offline_store,
        )
    return {
        "project": cfg.project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": {"type": cfg.offline_store},
        # Rows reach the online store in batches (whole-table protobuf conversion peaked at
        # 11.6 GB at 1M accounts), and only each entity's latest snapshot is read.
        "materialization": {"online_write_batch_size": 10_000, "pull_latest_features": True},
        "entity_key_serialization_version": 3,
    }


def open_store(feast_dir: str | Path):  # noqa: ANN201 - feast is heavy; imported here
    """The FeatureStore of a run's Feast folder."""
    from feast import FeatureStore

    feast_dir = Path(feast_dir)
    # Feast warns at every load that the flag above targets SQL registries; it is read by
    # the file registry too (a killed materialize would otherwise block every read).
    logging.getLogger("feast.repo_config").setLevel(logging.ERROR)
    if not (feast_dir / "feature_store.yaml").exists():
        raise InputError(
            "no Feast repo here: run `followrec features` first",
            path=str(feast_dir / "feature_store.yaml"),
        )
    return FeatureStore(repo_path=str(feast_dir))


def apply(cfg: FeastConfig, feature_dir: str | Path, feast_dir: str | Path) -> dict[str, Any]:
    """Write the run's feature_store.yaml and register the definitions for these tables."""
    feast_dir = Path(feast_dir)
    feast_dir.mkdir(parents=True, exist_ok=True)
    config = repo_config(cfg, feast_dir)
    atomic_write(feast_dir / "feature_store.yaml", yaml.safe_dump(config, sort_keys=False))
    store = open_store(feast_dir)
    objects = definitions.build(feature_dir)
    store.apply(objects)
    return {
        "feast_repo": str(feast_dir.resolve()),
        "objects": sorted(f"{type(o).__name__}:{o.name}" for o in objects),
        **{f"{t}_service": name for t, name in read_manifest(feature_dir)["services"].items()},
    }


def materialize(
    feature_dir: str | Path, feast_dir: str | Path, towers: Sequence[str] = ("consumer",)
) -> dict[str, Any]:
    """Load these towers' snapshot rows into the online store (idempotent: the same rows are
    rewritten)."""
    unknown = [t for t in towers if t not in TOWERS]
    if unknown or not towers:
        raise InputError(
            f"expected one or more of {', '.join(TOWERS)}",
            field="feast.online_towers",
            value=",".join(towers),
        )
    manifest = read_manifest(feature_dir)
    stamp = datetime.fromisoformat(manifest["feature_timestamp"])
    store = open_store(feast_dir)
    store.materialize(
        start_date=stamp - timedelta(seconds=1),
        end_date=max(stamp + timedelta(seconds=1), datetime.now(UTC)),
        feature_views=[f"{t}_features" for t in towers],
    )
    return {
        "materialized_at": stamp.isoformat(),
        "rows": {t: manifest["rows"][t] for t in towers},
    }


def historical_tables(
    feature_dir: str | Path,
    feast_dir: str | Path,
    as_of: pd.Timestamp | None = None,
) -> FeatureTables:
    """Feature tables for every user and account as they were at `as_of` (default: the
    snapshot time), fetched with get_historical_features (a point-in-time join)."""
    feature_dir = Path(feature_dir)
    manifest = read_manifest(feature_dir)
    as_of = as_of if as_of is not None else pd.Timestamp(manifest["feature_timestamp"])
    as_of = pd.Timestamp(as_of).floor("us")
    store = open_store(feast_dir)
    frames = {}
    for tower, key in definitions.KEYS.items():
        ids = pd.read_parquet(feature_dir / f"{tower}.parquet", columns=[key])[key].unique()
        entity_df = pd.DataFrame({key: np.sort(ids), definitions.TIMESTAMP: as_of})
        service = store.get_feature_service(manifest["services"][tower])
        frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
        frame = frame.sort_values(key).reset_index(drop=True)
        # The file store drops an entity with no row at or before as_of; DuckDB returns it
        # with every feature null.
        values = frame.drop(columns=[key, definitions.TIMESTAMP], errors="ignore")
        unmatched = len(ids) - len(frame) + int(values.isna().all(axis=1).sum())
        if unmatched:
            raise InputError(
                f"{unmatched} of {len(ids)} {key}s have no {tower} features "
                "at or before this time (point-in-time join)",
                field="as_of",
                value=str(as_of),
            )
        frames[tower] = frame.drop(columns=[definitions.TIMESTAMP])
    vocabularies = json.loads((feature_dir / "vocabularies.json").read_text())
    return FeatureTables(
        consumer=_restore(frames["consumer"], feature_dir / "consumer.parquet"),
        producer=_restore(frames["producer"], feature_dir / "producer.parquet"),
        vocabularies=vocabularies,
        feature_timestamp=as_of,
    )


def online_features(feast_dir: str | Path, service: str, key: str, ids: list[int]) -> pd.DataFrame:
    """Online features for these entity ids, in the given order (missing ones are null)."""
    store = open_store(feast_dir)
    response = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=[{key: int(i)} for i in ids]
    )
    return pd.DataFrame(response.to_dict())


def _restore(frame: pd.DataFrame, source: Path) -> pd.DataFrame:
    """The source table's columns, order and dtypes (Feast widens some types on the way)."""
    schema = pq.read_schema(source)
    columns = [c for c in schema.names if c != definitions.TIMESTAMP]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError("Feast returned no column for these features", field=",".join(missing))
    dtypes = schema.empty_table().to_pandas().dtypes
    out = frame[columns].copy()
    for column in columns:
        arrow_type = schema.field(column).type
        if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
            inner = arrow_type.value_type.to_pandas_dtype()
            out[column] = [np.asarray(v if v is not None else [], dtype=inner) for v in out[column]]
        else:
            out[column] = out[column].astype(dtypes[column])
    return out
