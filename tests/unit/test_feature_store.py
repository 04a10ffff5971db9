"""Feast round trips: the training set from get_historical_features equals the offline
feature builder, the join is point-in-time, and pushed events reach the online store."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from followrec.core.config import FeastConfig
from followrec.core.errors import InputError
from followrec.features import feast_definitions as definitions
from followrec.features import feature_store
from tests.conftest import synthetic_feature_tables


@pytest.fixture(scope="module")
def tables():
    return synthetic_feature_tables(300, 6)


def same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        x, y = a[column], b[column]
        if x.dtype == object:
            if not all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(x, y)):
                return False
        elif not np.allclose(x.to_numpy(dtype=float), y.to_numpy(dtype=float)):
            return False
    return True


@pytest.mark.parametrize("offline_store", ["duckdb", "file"])
def test_historical_features_equal_the_builder_and_are_point_in_time(
    tables, tmp_path, offline_store
):
    features = tmp_path / "features"
    manifest = feature_store.write_feature_tables(tables, features)
    # A second, later snapshot in the same source: every follow count moved by +1000.
    later = pd.Timestamp(manifest["feature_timestamp"]) + pd.Timedelta(days=30)
    consumer = pd.read_parquet(features / "consumer.parquet")
    newer = consumer.assign(follow_count=consumer["follow_count"] + 1000)
    newer[definitions.TIMESTAMP] = later.as_unit("ns")
    pd.concat([consumer, newer]).to_parquet(features / "consumer.parquet", index=False)

    feature_store.apply(FeastConfig(offline_store=offline_store), features, tmp_path / "feast")
    as_of_first = feature_store.historical_tables(features, tmp_path / "feast")
    assert same(as_of_first.consumer, tables.consumer)
    assert same(as_of_first.producer, tables.producer)
    as_of_later = feature_store.historical_tables(features, tmp_path / "feast", as_of=later)
    assert np.array_equal(
        as_of_later.consumer["follow_count"], tables.consumer["follow_count"] + 1000
    )
    # Before the first snapshot there is nothing to join.
    before = pd.Timestamp(manifest["feature_timestamp"]) - pd.Timedelta(days=1)
    with pytest.raises(InputError, match="have no consumer features at or before"):
        feature_store.historical_tables(features, tmp_path / "feast", as_of=before)


def test_an_unknown_offline_store_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(InputError, match="feast.offline_store"):
        feature_store.repo_config(FeastConfig(offline_store="spark"), tmp_path)


def test_materialize_loads_only_the_towers_named_online(tables, tmp_path):
    manifest = feature_store.write_feature_tables(tables, tmp_path / "features")
    feature_store.apply(FeastConfig(), tmp_path / "features", tmp_path / "feast")
    with pytest.raises(InputError, match="feast.online_towers"):
        feature_store.materialize(tmp_path / "features", tmp_path / "feast", ("accounts",))
    done = feature_store.materialize(tmp_path / "features", tmp_path / "feast")
    assert set(done["rows"]) == {"consumer"}  # the default: what serving reads

    def producer_row():
        return feature_store.online_features(
            tmp_path / "feast", manifest["services"]["producer"], "account_id", [3]
        ).drop(columns=["account_id"])

    assert producer_row().isna().all(axis=None)
    feature_store.materialize(tmp_path / "features", tmp_path / "feast", ("consumer", "producer"))
    assert producer_row().notna().any(axis=None)


def test_materialize_then_push_updates_one_user_online(tables, tmp_path):
    from feast.data_source import PushMode

    manifest = feature_store.write_feature_tables(tables, tmp_path / "features")
    feature_store.apply(FeastConfig(), tmp_path / "features", tmp_path / "feast")
    feature_store.materialize(tmp_path / "features", tmp_path / "feast")
    service = manifest["services"]["consumer"]
    online = feature_store.online_features(tmp_path / "feast", service, "user_id", [3])
    assert online["follow_count"].iloc[0] == tables.consumer["follow_count"].iloc[3]

    event = tables.consumer.iloc[[3]].copy()
    event["recent_follows"] = [np.array([42, 7], dtype=np.int64)]
    event["follow_count"] = event["follow_count"] + 2
    event[definitions.TIMESTAMP] = pd.Timestamp.now(tz="UTC")
    store = feature_store.open_store(tmp_path / "feast")
    store.push(definitions.PUSH_SOURCE, event, to=PushMode.ONLINE)
    online = feature_store.online_features(tmp_path / "feast", service, "user_id", [3, 4])
    assert list(online["recent_follows"].iloc[0]) == [42, 7]
    assert online["follow_count"].iloc[0] == tables.consumer["follow_count"].iloc[3] + 2
    assert online["follow_count"].iloc[1] == tables.consumer["follow_count"].iloc[4]  # untouched


def test_feature_repo_schema_matches_the_tables_the_features_step_writes(tmp_path, twitch_dir):
    """feature_repo/definitions.py spells out the default schema for review; a change to the
    feature tables must change that file too (same columns, types and schema version)."""
    import importlib.util

    from followrec.core.config import load_config
    from followrec.features.ingest import load_split_features

    cfg = load_config(None, [f"data.twitch_dir={twitch_dir}", "data.twitch_languages=[PTBR]"])
    tables = load_split_features(cfg, progress=False)[2]
    manifest = feature_store.write_feature_tables(tables, tmp_path / "features")
    path = Path(__file__).resolve().parents[2] / "feature_repo" / "definitions.py"
    spec = importlib.util.spec_from_file_location("feature_repo_definitions", path)
    repo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repo)
    assert definitions.table_columns(tmp_path / "features") == repo.COLUMNS
    assert manifest["schema_version"] == repo.SCHEMA_VERSION
    assert repo.consumer_service.name == manifest["services"]["consumer"]
