"""`followrec ui`: the Airflow, MLflow and Feast web UIs over one run, on one address.

Airflow runs as its components (api-server, scheduler, dag-processor, triggerer) rather
than `airflow standalone`, whose log servers listen on every address whatever the host. Each
UI starts in its own process group; SIGTERM or Ctrl-C stops every process they started
(LocalExecutor workers ignore SIGTERM and get SIGKILL after a grace period)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from followrec.core.config import Config
from followrec.registry.tracking import SERVER_ENV, tracking_uri

PORTS = {"airflow": 8080, "mlflow": 5000, "feast": 8888}
AIRFLOW_USER = "admin"
STOP_GRACE_SECONDS = 10.0


def airflow_settings(run: Path, host: str, port: int) -> dict[str, str]:
    """Environment of every Airflow component: one home per run, DAGs unpaused, a shared
    JWT secret and a generated login kept under the home (made once, reused after)."""
    bin_dir = Path(sys.executable).parent
    home = (run / "airflow-home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    secret_file = home / "followrec-ui-secrets.json"
    if not secret_file.exists():
        secret_file.write_text(
            json.dumps(
                {"jwt_secret": secrets.token_urlsafe(32), "password": secrets.token_urlsafe(12)}
            )
        )
        secret_file.chmod(0o600)
    stored = json.loads(secret_file.read_text())
    passwords = home / "simple_auth_manager_passwords.json.generated"
    passwords.write_text(json.dumps({AIRFLOW_USER: stored["password"]}))
    passwords.chmod(0o600)
    return {
        # Components start their own helpers as `airflow ...` from PATH.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parents[1] / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{host}:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": stored["jwt_secret"],
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
    }


def commands(
    cfg: Config, run: Path, host: str, ports: dict[str, int] | None = None
) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each process's command line and extra environment."""
    ports = {**PORTS, **(ports or {})}
    bin_dir = Path(sys.executable).parent
    airflow = str(bin_dir / "airflow")
    env = airflow_settings(run, host, ports["airflow"])
    return {
        "airflow api-server": (
            [airflow, "api-server", "--host", host, "--port", str(ports["airflow"])], env
        ),
        "airflow scheduler": ([airflow, "scheduler", "--skip-serve-logs"], env),
        "airflow dag-processor": ([airflow, "dag-processor"], env),
        "airflow triggerer": ([airflow, "triggerer", "--skip-serve-logs"], env),
        "mlflow": (
            [str(bin_dir / "mlflow"), "ui", "--host", host, "--port", str(ports["mlflow"]),
             "--backend-store-uri", tracking_uri(cfg.mlflow.tracking_uri, run)],
            SERVER_ENV,
        ),
        "feast": (
            [str(bin_dir / "feast"), "-c", str(run / "feast"), "ui", "--host", host,
             "--port", str(ports["feast"])],
            {},
        ),
    }  # fmt: skip


def descendants(pids: list[int]) -> list:
    """Every live process below the given ones (psutil objects), the given ones included."""
    import psutil

    found = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            found += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


def stop_all(procs: list[subprocess.Popen], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM every process group and every descendant, SIGKILL what is left after
    `grace` seconds, and reap the direct children."""
    import psutil

    tree = descendants([p.pid for p in procs])
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def serve_uis(cfg: Config, run: Path, host: str, ports: dict[str, int] | None = None) -> int:
    """Migrate Airflow's database, start every UI process and wait; SIGTERM or Ctrl-C stops
    them all. Exits with the first one that dies on its own."""
    run = Path(run)
    procs: list[subprocess.Popen] = []
    cmds = commands(cfg, run, host, ports)
    airflow_env = {**os.environ, **cmds["airflow scheduler"][1]}
    migrate = subprocess.run(
        [cmds["airflow scheduler"][0][0], "db", "migrate"],
        env=airflow_env,
        capture_output=True,
        text=True,
    )
    if migrate.returncode != 0:
        print(migrate.stderr[-3000:], file=sys.stderr)
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        for argv, env in cmds.values():
            procs.append(subprocess.Popen(argv, env={**os.environ, **env}, process_group=0))
        shown = {**PORTS, **(ports or {})}
        password = json.loads(
            (Path(airflow_env["AIRFLOW_HOME"]) / "followrec-ui-secrets.json").read_text()
        )["password"]
        print(f"airflow  http://{host}:{shown['airflow']}  (login {AIRFLOW_USER} / {password})")
        print(f"mlflow   http://{host}:{shown['mlflow']}")
        print(f"feast    http://{host}:{shown['feast']}", flush=True)
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
        return next(proc.returncode for proc in procs if proc.poll() is not None) or 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(procs)
        signal.signal(signal.SIGTERM, previous)
