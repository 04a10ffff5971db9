"""`followrec run`: the features and training DAGs under Airflow, in this process, on the
embedded defaults (SQLite metadata in RUN/airflow-home, no scheduler or server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DAGS = Path(__file__).resolve().parents[1] / "dags"


def airflow_env(run: Path) -> dict[str, str]:
    """Airflow settings for a self-contained home inside the run folder."""
    return {
        "AIRFLOW_HOME": str((run / "airflow-home").resolve()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def run_dags(run: Path, confs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Migrate the metadata database, then `dag.test()` each DAG in order; stops at the
    first failed run. Returns each DAG's state, task states and seconds."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    env = airflow_env(run)
    os.environ.update(env)  # before airflow is imported: its config is read at import
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {json.dumps(bag.import_errors, default=str)}")
    results: dict[str, Any] = {}
    for dag_id, conf in confs.items():
        started = time.perf_counter()
        dag_run = bag.dags[dag_id].test(run_conf=conf)
        states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
        results[dag_id] = {
            "state": str(dag_run.state),
            "tasks": states,
            "seconds": round(time.perf_counter() - started, 1),
        }
        if not str(dag_run.state).endswith("success"):
            break
    return results
