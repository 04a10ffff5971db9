"""`followrec ui`: the Airflow, MLflow and Feast web UIs over one run, on localhost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from followrec.core.config import Config
from followrec.registry.tracking import tracking_uri

PORTS = {"airflow": 8080, "mlflow": 5000, "feast": 8888}


def commands(cfg: Config, run: Path, host: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each UI's command line and extra environment."""
    bin_dir = Path(sys.executable).parent
    dags = Path(__file__).resolve().parents[1] / "dags"
    airflow_env = {
        # `airflow standalone` starts its components as `airflow ...` from PATH.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str((run / "airflow-home").resolve()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    return {
        "airflow": ([str(bin_dir / "airflow"), "standalone"], airflow_env),
        "mlflow": (
            [str(bin_dir / "mlflow"), "ui", "--host", host, "--port", str(PORTS["mlflow"]),
             "--backend-store-uri", tracking_uri(cfg.mlflow.tracking_uri, run)],
            {},
        ),
        "feast": (
            [str(bin_dir / "feast"), "-c", str(run / "feast"), "ui", "--host", host,
             "--port", str(PORTS["feast"])],
            {},
        ),
    }  # fmt: skip


def serve_uis(cfg: Config, run: Path, host: str) -> int:
    """Start all three and wait; Ctrl-C stops them."""
    procs = []
    for name, (argv, env) in commands(cfg, run, host).items():
        procs.append(subprocess.Popen(argv, env={**os.environ, **env}))
        print(f"{name:8s} http://{host}:{PORTS[name]}")
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
    return 0
