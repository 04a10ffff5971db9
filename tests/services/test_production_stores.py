"""The production settings against the real services on this machine: Feast with a Redis
online store and a SQL registry on PostgreSQL; MLflow tracking and registry on PostgreSQL."""

import uuid

import numpy as np
import pytest

from followrec.core.config import FeastConfig
from followrec.features import feature_store
from followrec.registry.aliases import CHAMPION, alias_version
from followrec.registry.tracking import MODEL_NAME, Tracker, registry_client
from tests.conftest import synthetic_feature_tables


@pytest.fixture
def postgres_db():
    """A fresh PostgreSQL database, dropped afterwards."""
    import psycopg

    name = f"followrec_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def tables():
    return synthetic_feature_tables(400, 8)


@pytest.mark.redis
@pytest.mark.postgres
def test_feast_on_redis_with_sql_registry_serves_what_sqlite_serves(tables, postgres_db, tmp_path):
    project = f"followrec_{uuid.uuid4().hex[:8]}"  # one Redis namespace per test run
    manifest = feature_store.write_feature_tables(tables, tmp_path / "features")
    online = {}
    for kind, cfg in {
        "sqlite": FeastConfig(project=project),
        "redis": FeastConfig(project=project, online_store="redis", registry=postgres_db),
    }.items():
        feast_dir = tmp_path / f"feast-{kind}"
        feature_store.apply(cfg, tmp_path / "features", feast_dir)
        feature_store.materialize(tmp_path / "features", feast_dir)
        online[kind] = feature_store.online_features(
            feast_dir, manifest["services"]["consumer"], "user_id", [0, 7, 399, 10**6]
        )
    store = feature_store.open_store(tmp_path / "feast-redis")
    assert type(store.config.online_store).__name__ == "RedisOnlineStoreConfig"
    assert store.config.registry.registry_type == "sql"
    # The registry lives in PostgreSQL: a second store on the same URL sees the services.
    names = {s.name for s in store.list_feature_services()}
    assert manifest["services"]["consumer"] in names
    sqlite, redis = online["sqlite"], online["redis"]
    assert list(redis["user_id"]) == [0, 7, 399, 10**6]
    assert redis["follow_count"].iloc[:3].tolist() == sqlite["follow_count"].iloc[:3].tolist()
    for a, b in zip(redis["follows"].iloc[:3], sqlite["follows"].iloc[:3], strict=True):
        assert list(a) == list(b)
    assert redis["follow_count"].isna().iloc[3]  # unknown user: nothing
    store.teardown()  # removes this project's keys from Redis


@pytest.mark.postgres
def test_mlflow_tracking_and_registry_on_postgres(postgres_db, tmp_path):
    import mlflow
    from mlflow.pyfunc import PythonModel

    class Echo(PythonModel):
        def predict(self, context, model_input):  # noqa: ARG002
            return model_input

    with Tracker(True, postgres_db, "followrec", tmp_path, "pg-run") as tracker:
        tracker.log_params({"train.epochs": 1})
        tracker.log_metrics({"recall_at_100": 0.5})
        mlflow.pyfunc.log_model(
            name="model",
            python_model=Echo(),
            registered_model_name=MODEL_NAME,
            artifacts=None,
        )
    client = registry_client(postgres_db)
    run = client.get_run(tracker.run_id)
    assert run.data.metrics["recall_at_100"] == 0.5
    assert run.data.params["train.epochs"] == "1"
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, "1")
    assert str(alias_version(client, CHAMPION).version) == "1"
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    assert np.array_equal(model.predict(np.arange(3)), np.arange(3))


@pytest.mark.postgres
def test_experiment_store_and_exposure_log_on_postgresql(postgres_db):
    from followrec.core.config import load_config
    from followrec.evaluation.experiments import report
    from followrec.evaluation.exposures import Arm, Experiment, ExperimentStore
    from followrec.serving.experiments import Assignment, ExposureLog

    store = ExperimentStore(postgres_db)
    arms = (Arm("control", 0.5, "blend"), Arm("treatment", 0.5, "champion"))
    exp = store.create(Experiment("pg", arms, "salt", "control"))
    log = ExposureLog(store)
    for user in range(40):
        arm = exp.arm_for(user)
        log.impression(f"r{user}", user, Assignment("pg", arm), "1", "model-v1", [user + 1, 99])
        if user % 4 == 0:
            log.event(user, "follow", user + 1)
    log.close()
    # A second connection (another replica, or the analysis job) reads what was written.
    again = ExperimentStore(postgres_db)
    assert again.live().name == "pg" and again.live().arm_for(5) == exp.arm_for(5)
    rep = report(again, "pg", load_config(None, ["experiments.min_users_per_arm=5"]))
    assert sum(a["impressions"] for a in rep["arms"].values()) == 80
    assert sum(a["follows"] for a in rep["arms"].values()) == 10
    assert log.dropped == 0
