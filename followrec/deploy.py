"""`followrec deploy up|down|status`: the production topology on this machine.

Hosts are Linux network namespaces on one bridge (`ip netns` + veth, 10.231.0.0/24): the
Celery workers and the serving replica each in their own; Airflow's api-server, scheduler,
dag-processor and triggerer and the MLflow tracking server in the root namespace on the
bridge address. State lives in the machine's real PostgreSQL (Airflow metadata, MLflow
backend, Feast registry, experiment store: one database each), Redis (Feast online store)
and RabbitMQ (Celery broker); a forwarder makes those loopback-only services reachable from
the namespaces at the bridge address. Nothing listens beyond loopback, the bridge and the
namespaces' own addresses. Needs root (namespaces) and the three services."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from followrec.core.errors import InputError
from followrec.registry.tracking import SERVER_ENV

BRIDGE = "frbr0"
NET = "10.231.0"
HOST_IP = f"{NET}.1"
HOSTS = {"worker-1": 2, "worker-2": 3, "serve-1": 4}  # namespace -> last octet
FORWARDED = {"postgres": 5432, "redis": 6379, "rabbitmq": 5672}
AIRFLOW_PORT, MLFLOW_PORT, SERVE_PORT = 8380, 5380, 8000
DATABASES = ("airflow", "mlflow", "feast", "experiments")
PREFIX = "followrec_deploy_"
AIRFLOW_USER = "admin"
DAGS = Path(__file__).resolve().parents[1] / "dags"


def namespace(host: str) -> str:
    return f"fr-{host}"


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


# ------------------------------------------------------------------ network


def network_up() -> None:
    """The bridge with the host address, one namespace per host with a veth on it."""
    if _sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        _sh("ip", "link", "add", BRIDGE, "type", "bridge")
        _sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
    _sh("ip", "link", "set", BRIDGE, "up")
    existing = _sh("ip", "netns", "list").stdout
    for host, octet in HOSTS.items():
        ns = namespace(host)
        if ns in existing.split():
            continue
        _sh("ip", "netns", "add", ns)
        veth = _veth(host)
        _sh("ip", "link", "del", veth, check=False)  # left by a namespace not yet freed
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _sh("ip", "link", "set", veth, "master", BRIDGE, "up")
        _sh("ip", "-n", ns, "addr", "add", f"{NET}.{octet}/24", "dev", "eth0")
        _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        _sh("ip", "-n", ns, "link", "set", "lo", "up")


def _veth(host: str) -> str:
    return f"frv-{host}"[:15]


def network_down() -> None:
    for host in HOSTS:
        _sh("ip", "netns", "del", namespace(host), check=False)
        _sh("ip", "link", "del", _veth(host), check=False)
    _sh("ip", "link", "del", BRIDGE, check=False)


def kill_host(host: str) -> list[int]:
    """SIGKILL every process in a host's namespace (what a host's sudden death does)."""
    listed = _sh("ip", "netns", "pids", namespace(host), check=False).stdout.split()
    pids = [int(p) for p in listed if p.isdigit()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def host_ip(host: str) -> str:
    return f"{NET}.{HOSTS[host]}"


# ------------------------------------------------------------------ forwarder


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _forward(listen: str, ports: list[int]) -> None:
    async def handler(port: int, reader: Any, writer: Any) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    servers = [
        await asyncio.start_server(lambda r, w, p=port: handler(p, r, w), listen, port)
        for port in ports
    ]
    await asyncio.gather(*(s.serve_forever() for s in servers))


def forward(listen: str, ports: list[int]) -> None:
    """Relay TCP from listen:port to 127.0.0.1:port for each port (until killed)."""
    asyncio.run(_forward(listen, ports))


# ------------------------------------------------------------------ settings


def _databases(create: bool) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        have = {r[0] for r in c.execute("SELECT datname FROM pg_database").fetchall()}
        for name in DATABASES:
            db = PREFIX + name
            if create and db not in have:
                c.execute(f"CREATE DATABASE {db}")
            elif not create and db in have:
                c.execute(f"DROP DATABASE {db} WITH (FORCE)")


def pg_url(name: str, driver: str = "psycopg") -> str:
    return f"postgresql+{driver}://postgres@{HOST_IP}:5432/{PREFIX}{name}"


def site_settings() -> dict[str, Any]:
    """followrec settings every host reads ($FOLLOWREC_SETTINGS)."""
    twitch = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitch"
    return {
        "data": {"twitch_dir": str(twitch)},
        "mlflow": {"tracking_uri": f"http://{HOST_IP}:{MLFLOW_PORT}"},
        "feast": {
            "project": "followrec_deploy",
            "online_store": "redis",
            "redis_connection": f"{HOST_IP}:6379",
            "registry": pg_url("feast"),
        },
        "experiments": {"store": pg_url("experiments")},
    }


def airflow_env(state: Path, secrets_: dict[str, str]) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    home = state / "airflow-home"
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "followrec.deploy.host_name",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST_IP}:{AIRFLOW_PORT}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets_["jwt_secret"],
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url("airflow", "psycopg2"),
        # Airflow 3's async engine: psycopg 3 (installed) instead of asyncpg (not).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": pg_url("airflow", "psycopg"),
        "AIRFLOW__CELERY__BROKER_URL": f"amqp://guest:guest@{HOST_IP}:5672//",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg_url("airflow", "psycopg2"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        # A killed worker's task is noticed within a minute and retried on another worker.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "10",
        "FOLLOWREC_SETTINGS": str(state / "settings.yaml"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }


def host_name() -> str:
    """Airflow's hostname_callable: the deployment host a process runs on."""
    return os.environ.get("FOLLOWREC_HOST") or socket.getfqdn()


# ------------------------------------------------------------------ processes


def _state(run: Path) -> Path:
    return Path(run).resolve()


def _load_state(state: Path) -> dict[str, Any]:
    path = state / "processes.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start(
    state: Path, name: str, argv: list[str], env: dict[str, str], ns: str | None = None
) -> int:
    log = state / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return proc.pid


def _wait_http(url: str, seconds: float, what: str, ok: tuple[int, ...] = (200,)) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=5).status_code
            if last in ok:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(1)
    raise RuntimeError(f"{what} did not come up at {url} within {seconds:.0f} s ({last!r})")


def _check_services() -> None:
    for name, port in FORWARDED.items():
        try:
            socket.create_connection(("127.0.0.1", port), 2).close()
        except OSError:
            raise InputError(
                f"{name} is not listening on 127.0.0.1:{port}", field="deploy", value=name
            ) from None
    if os.geteuid() != 0:
        raise InputError("network namespaces need root", field="deploy", value=os.geteuid())


def up(run: Path) -> dict[str, Any]:
    """Start whatever is not running yet; write endpoints.json. Idempotent: the serving
    replica starts once the pipeline's run folder exists."""
    _check_services()
    state = _state(run)
    state.mkdir(parents=True, exist_ok=True)
    secret_file = state / "secrets.json"
    if not secret_file.exists():
        secret_file.write_text(json.dumps({
            "jwt_secret": secrets.token_urlsafe(32),
            "airflow_password": secrets.token_urlsafe(12),
            "api_key": secrets.token_urlsafe(24),
            "admin_key": secrets.token_urlsafe(24),
        }))  # fmt: skip
        secret_file.chmod(0o600)
    keys = json.loads(secret_file.read_text())
    (state / "settings.yaml").write_text(yaml.safe_dump(site_settings()))
    network_up()
    _databases(create=True)
    env = airflow_env(state, keys)
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "passwords.json").write_text(json.dumps({AIRFLOW_USER: keys["airflow_password"]}))
    procs = {k: v for k, v in _load_state(state).items() if _alive(v)}
    airflow = str(Path(sys.executable).parent / "airflow")
    python = sys.executable
    if "forwarder" not in procs:
        procs["forwarder"] = _start(
            state, "forwarder",
            [python, "-m", "followrec.deploy", "forward", HOST_IP, *map(str, FORWARDED.values())],
            {},
        )  # fmt: skip
        time.sleep(1)
    if "airflow-api-server" not in procs:
        migrate = subprocess.run(
            [airflow, "db", "migrate"], env={**os.environ, **env}, capture_output=True, text=True
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed: {migrate.stderr[-2000:]}")
    root = {
        "airflow-api-server": [airflow, "api-server", "--host", HOST_IP,
                               "--port", str(AIRFLOW_PORT)],
        "airflow-scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "airflow-dag-processor": [airflow, "dag-processor"],
        "airflow-triggerer": [airflow, "triggerer", "--skip-serve-logs"],
        "mlflow": [
            str(Path(sys.executable).parent / "mlflow"), "server", "--host", HOST_IP,
            "--port", str(MLFLOW_PORT), "--backend-store-uri", pg_url("mlflow"),
            "--serve-artifacts", "--artifacts-destination", str(state / "data" / "mlartifacts"),
            "--allowed-hosts", f"{HOST_IP}:{MLFLOW_PORT},127.0.0.1:{MLFLOW_PORT}",
            "--workers", "1",
        ],
    }  # fmt: skip
    for name, argv in root.items():
        if name not in procs:
            procs[name] = _start(state, name, argv, env if name != "mlflow" else SERVER_ENV)
    for worker in ("worker-1", "worker-2"):
        if worker not in procs:
            argv = [airflow, "celery", "worker", "--skip-serve-logs", "--concurrency", "1",
                    "--celery-hostname", f"{worker}@%h"]  # fmt: skip
            procs[worker] = _start(
                state, worker, argv, {**env, "FOLLOWREC_HOST": worker}, namespace(worker)
            )
    pipeline_run = state / "data" / "runs" / "pipeline"
    if "serve-1" not in procs and (pipeline_run / "config.yaml").exists():
        argv = [python, "-m", "followrec", "serve", "--run", str(pipeline_run),
                "--host", host_ip("serve-1"), "--port", str(SERVE_PORT),
                "--set", "serving.poll_seconds=5"]  # fmt: skip
        serve_env = {
            **env,
            "FOLLOWREC_HOST": "serve-1",
            "FOLLOWREC_API_KEY": keys["api_key"],
            "FOLLOWREC_ADMIN_API_KEY": keys["admin_key"],
        }
        procs["serve-1"] = _start(state, "serve-1", argv, serve_env, namespace("serve-1"))
    (state / "processes.json").write_text(json.dumps(procs, indent=2))
    _wait_http(f"http://{HOST_IP}:{AIRFLOW_PORT}/api/v2/monitor/health", 180, "airflow")
    _wait_http(f"http://{HOST_IP}:{MLFLOW_PORT}/health", 120, "mlflow")
    endpoints = {
        "airflow": {
            "url": f"http://{HOST_IP}:{AIRFLOW_PORT}",
            "username": AIRFLOW_USER,
            "password": keys["airflow_password"],
        },
        "mlflow": {"url": f"http://{HOST_IP}:{MLFLOW_PORT}"},
        "serving": {
            "urls": [f"http://{host_ip('serve-1')}:{SERVE_PORT}"],
            "api_key": keys["api_key"],
        },
        "run_dir": str(pipeline_run),
        "settings": str(state / "settings.yaml"),
        "hosts": {h: host_ip(h) for h in HOSTS},
    }
    endpoints_file = state / "endpoints.json"
    endpoints_file.write_text(json.dumps(endpoints, indent=2))
    endpoints_file.chmod(0o600)
    return {"endpoints": str(endpoints_file), "processes": procs}


def down(run: Path, purge: bool = False) -> dict[str, Any]:
    """Stop every process the deployment started (process groups, then what is left),
    remove the namespaces and the bridge; `purge` also drops the databases and the folder."""
    import psutil

    state = _state(run)
    procs = _load_state(state)
    tree = []
    for pid in procs.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(pid)
            tree += [parent, *parent.children(recursive=True)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=15)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    for pid in procs.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for host in HOSTS:  # a task process may have left its worker's process group
        kill_host(host)
    (state / "processes.json").unlink(missing_ok=True)
    network_down()
    if purge:
        _databases(create=False)
        shutil.rmtree(state, ignore_errors=True)
    return {"stopped": sorted(procs), "purged": purge}


def status(run: Path) -> dict[str, Any]:
    state = _state(run)
    procs = _load_state(state)
    return {
        "processes": {name: ("running" if _alive(pid) else "dead") for name, pid in procs.items()},
        "namespaces": [
            ns for ns in _sh("ip", "netns", "list").stdout.split() if ns.startswith("fr-")
        ],
        "endpoints": str(state / "endpoints.json") if (state / "endpoints.json").exists() else None,
    }


if __name__ == "__main__":  # python -m followrec.deploy forward ADDRESS PORT...
    if len(sys.argv) >= 4 and sys.argv[1] == "forward":
        forward(sys.argv[2], [int(p) for p in sys.argv[3:]])
