"""The real DAGs run under Airflow on a small real graph (Twitch PTBR): features ->
training -> index refresh, then the training DAG again (idempotent re-run)."""

import json
import textwrap

import numpy as np

from followrec.cli import main
from followrec.features import feature_store
from followrec.indexing.store import load_published, load_version, read_pointer
from followrec.registry.aliases import CHAMPION, alias_version
from followrec.registry.tracking import registry_client
from followrec.serving.candidates import vectors_of
from tests.dags.conftest import DAGS, run_python

RUN_DAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag({dags!r}).dags[{dag_id!r}]
run = dag.test(run_conf={conf!r})
tis = sorted(run.get_task_instances(), key=lambda ti: ti.start_date)
tasks = [[ti.task_id, str(ti.state), ti.start_date.isoformat(), ti.end_date.isoformat()]
         for ti in tis]
print(json.dumps({{"state": str(run.state), "tasks": tasks}}))
"""


LAST_ASSET_EVENT = """
import json
from airflow.models.asset import AssetEvent
from airflow.utils.session import create_session
with create_session() as session:
    event = session.query(AssetEvent).order_by(AssetEvent.id.desc()).first()
    print(json.dumps(None if event is None else dict(event.extra or {})))
"""


def run_dag(env, dag_id, conf):
    code = textwrap.dedent(RUN_DAG.format(dags=str(DAGS), dag_id=dag_id, conf=conf))
    return run_python(env, code)


def succeeded(result, tasks):
    """The run succeeded, every task ran, in this order, each after the previous ended."""
    assert result["state"].endswith("success"), result
    assert [t[0] for t in result["tasks"]] == tasks, result["tasks"]
    for (_, _, _, ended), (name, _, started, _) in zip(result["tasks"], result["tasks"][1:]):
        assert started >= ended, f"{name} started before its upstream task ended"
    return all(state.endswith("success") for _, state, _, _ in result["tasks"])


def test_features_training_refresh_dags_and_idempotent_rerun(airflow_env, tmp_path):
    run = tmp_path / "run"
    features = run_dag(
        airflow_env,
        "followrec_features",
        {"dataset": "twitch", "twitch_languages": ["PTBR"], "run_dir": str(run)},
    )
    assert succeeded(features, ["ingest", "validate_raw", "build_features",
                                "validate_features", "feast_apply", "materialize"])  # fmt: skip
    # Online features are materialized: a known user has its follows, an unknown one nothing.
    manifest = feature_store.read_manifest(run / "features")
    online = feature_store.online_features(
        run / "feast", manifest["services"]["consumer"], "user_id", [0, 10**9]
    )
    assert online["follow_count"].iloc[0] > 0 and len(online["follows"].iloc[0]) > 0
    assert online["follow_count"].isna().iloc[1]
    assert json.loads((run / "validation" / "raw.json").read_text())["success"]
    # The Asset event hands over the run folder and the snapshot the features run published.
    extra = run_python(airflow_env, LAST_ASSET_EVENT)
    assert extra == {"run_dir": str(run.resolve()), "snapshot": (run / "snapshot").resolve().name}

    conf = {
        "run_dir": str(run),
        "epochs": 2,
        "extra_settings": ["baselines.sources=[popularity,als]"],
    }
    training = run_dag(airflow_env, "followrec_training", conf)
    tasks = [
        "training_set",
        "train",
        "evaluate",
        "gate",
        "build_index",
        "validate_index",
        "promote",
    ]
    assert succeeded(training, tasks)
    report = json.loads((run / "report.json").read_text())
    assert {"popularity", "als", "two_tower"} == set(report["sources"])
    assert 0 < report["sources"]["two_tower"]["recall@100"] <= 1
    client = registry_client(f"sqlite:///{run / 'mlflow.db'}")
    champion = alias_version(client, CHAMPION)
    assert str(champion.version) == "1" and champion.tags["gate.decision"] == "promoted"
    assert champion.tags["feast.consumer_service"] == manifest["services"]["consumer"]
    index, ids, index_manifest = load_published(run / "indexes")
    assert index_manifest["version"] == "model-v1" and index.ntotal == 1912
    assert index_manifest["schema_hash"] == champion.tags["schema_hash"]
    assert index_manifest["ann_recall_at_100"] >= 0.95

    # Re-running the same DAG run changes nothing: no new version, same champion and index.
    again = run_dag(airflow_env, "followrec_training", conf)
    assert succeeded(again, tasks)
    assert len(client.search_model_versions("name='followrec-two-tower'")) == 1
    assert str(alias_version(client, CHAMPION).version) == "1"
    assert read_pointer(run / "indexes")["current"] == "model-v1"

    # A weak challenger (one step) is trained, registered and rejected; it overwrites the
    # run's training folder, but a refresh embeds with the champion's registered weights.
    weak = ["--set", "train.max_steps=1", "--set", "baselines.sources=[popularity]"]
    assert main(["training", "--run", str(run), "--quiet", *weak]) == 0
    assert json.loads((run / "gate.json").read_text())["passed"] is False
    assert str(alias_version(client, CHAMPION).version) == "1"

    refresh = run_dag(airflow_env, "followrec_index_refresh", {"run_dir": str(run)})
    assert succeeded(refresh, ["refresh_index", "validate_refresh", "publish_refresh"])
    current = read_pointer(run / "indexes")["current"]
    assert current.startswith("model-v1-refresh-")
    assert alias_version(client, CHAMPION).tags["index.version"] == current
    # Same weights, same snapshot: the same producer vectors as the champion's own index.
    refreshed, before = (load_version(run / "indexes", v) for v in (current, "model-v1"))
    assert np.array_equal(vectors_of(refreshed[0]), vectors_of(before[0]))
    assert np.array_equal(refreshed[1], before[1])
    assert "model_dir" not in refreshed[2] and refreshed[2]["model_version"] == "1"
