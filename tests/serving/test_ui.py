"""`followrec ui` on a real run: Airflow, MLflow and Feast listen on 127.0.0.1 only, the
DAGs come up unpaused behind a generated login, and SIGTERM leaves no process behind."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.serving.conftest import free_port, wait_for

pytestmark = pytest.mark.timeout(420)


def test_ui_binds_loopback_unpauses_dags_and_stops_every_child(own_run):
    ports = {name: free_port() for name in ("airflow", "mlflow", "feast")}
    argv = [sys.executable, "-m", "followrec", "ui", "--run", str(own_run)]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("airflow") and "login admin / " in first, first
        password = first.rsplit(" ", 1)[1].strip(" )\n")
        airflow = f"http://127.0.0.1:{ports['airflow']}"

        def token():
            reply = httpx.post(
                f"{airflow}/auth/token", json={"username": "admin", "password": password}
            )
            return reply.status_code in (200, 201) and reply.json()["access_token"]

        bearer = {"Authorization": f"Bearer {wait_for(token, 180, 'airflow login')}"}

        def dags():
            reply = httpx.get(f"{airflow}/api/v2/dags", headers=bearer, timeout=10)
            found = {d["dag_id"]: d for d in reply.json()["dags"]}
            wanted = {"followrec_features", "followrec_training", "followrec_index_refresh"}
            return wanted <= set(found) and found

        found = wait_for(dags, 180, "DAGs parsed")
        assert not any(d["is_paused"] for d in found.values() if d["dag_id"].startswith("f"))
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{ports['mlflow']}/").status_code == 200,
                 120, "mlflow")  # fmt: skip
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{ports['feast']}/").status_code == 200,
                 120, "feast")  # fmt: skip

        tree = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
        listening = set()
        for pid in tree:
            try:
                connections = psutil.Process(pid).net_connections(kind="inet")
            except psutil.NoSuchProcess:
                continue
            listening |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
        assert listening and listening <= {"127.0.0.1"}, listening
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    time.sleep(1)
    left = [pid for pid in tree if psutil.pid_exists(pid) and
            psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]  # fmt: skip
    assert not left, [psutil.Process(pid).cmdline() for pid in left]
    secrets = json.loads((own_run / "airflow-home" / "followrec-ui-secrets.json").read_text())
    assert secrets["password"] == password
