"""The real followrec_training DAG run under Airflow on a small real graph."""

import json
import textwrap

from evaluation.registry import CHAMPION, alias_version
from evaluation.tracking import registry_client
from indexing.store import load_published
from tests.dags.conftest import DAGS, run_python


def test_training_dag_leaves_a_champion_and_a_published_index(airflow_env, tmp_path):
    out = tmp_path / "run"
    conf = {
        "dataset": "twitch",
        "twitch_languages": ["PTBR"],
        "epochs": 2,
        "out_dir": str(out),
        "extra_settings": ["eval.two_tower=[two_tower]", "baselines.sources=[popularity,als]"],
    }
    code = textwrap.dedent(f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        dag = DagBag({str(DAGS)!r}).dags["followrec_training"]
        run = dag.test(run_conf={conf!r})
        states = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
        print(json.dumps({{"state": str(run.state), "tasks": states}}))
    """)
    result = run_python(airflow_env, code)
    assert result["state"].endswith("success"), result
    assert set(result["tasks"]) == {"evaluate", "promote"}
    assert all(s.endswith("success") for s in result["tasks"].values())

    report = json.loads((out / "report.json").read_text())
    assert {"popularity", "als", "two_tower"} == set(report["sources"])
    client = registry_client(f"sqlite:///{out / 'mlflow.db'}")
    champion = alias_version(client, CHAMPION)
    assert str(champion.version) == "1"
    assert champion.tags["gate.decision"] == "promoted"
    index, ids, manifest = load_published(out / "indexes")
    assert manifest["version"] == "model-v1" and index.ntotal == 1912
    assert manifest["schema_hash"] == champion.tags["schema_hash"]
