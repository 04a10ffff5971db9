"""`followrec run`: the features and training DAGs under Airflow, in this process, on the
embedded defaults (SQLite metadata in RUN/airflow-home, no scheduler or server)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def output_to(log: Path | None) -> Iterator[Callable[[str], None]]:
    """Send everything written to stdout/stderr (this process's libraries and the
    subprocesses they start) to `log` instead; None leaves the output as it is. Yields a
    function that still writes a line to the terminal."""
    if log is None:
        yield lambda line: print(line, flush=True)
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w")
    with open(log, "ab") as sink, terminal:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda line: print(line, file=terminal, flush=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_dags(
    run: Path, confs: dict[str, dict[str, Any]], log: Path | None = None
) -> dict[str, Any]:
    """Migrate the metadata database, then `dag.test()` each DAG in order; stops at the
    first failed run. Returns each DAG's state, task states and seconds, and prints them as
    each run ends. With `log`, the libraries' output (Airflow task logs, Feast, GX, MLflow)
    goes to that file instead of the terminal."""
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
    results: dict[str, Any] = {}
    with output_to(log) as say:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(str(DAGS))
        if bag.import_errors:
            errors = json.dumps(bag.import_errors, default=str)
            raise RuntimeError(f"DAG import errors: {errors}")
        for dag_id, conf in confs.items():
            started = time.perf_counter()
            dag_run = bag.dags[dag_id].test(run_conf=conf)
            tis = sorted(dag_run.get_task_instances(), key=lambda ti: ti.start_date or 0)
            results[dag_id] = {
                "state": str(dag_run.state),
                "tasks": {ti.task_id: str(ti.state) for ti in tis},
                "seconds": round(time.perf_counter() - started, 1),
            }
            tasks = results[dag_id]["tasks"]
            done = sum(state.endswith("success") for state in tasks.values())
            say(f"{dag_id}: {dag_run.state} in {results[dag_id]['seconds']} s, "
                f"{done}/{len(tasks)} tasks succeeded")  # fmt: skip
            for task_id, state in tasks.items():
                if not state.endswith("success"):  # only what needs a look
                    say(f"  {task_id:18s} {state}")
            if not str(dag_run.state).endswith("success"):
                break
    return results
