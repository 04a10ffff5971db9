"""The deployed topology on this machine (`followrec deploy`): Airflow's components with two
Celery workers in their own network namespaces, MLflow's tracking server, PostgreSQL, Redis
and RabbitMQ. A user's journey through the REST API: trigger followrec_features with Params
(what the UI's Trigger button sends), followrec_training runs from its Asset event, tasks
land on both workers, one worker is killed -9 during `train` and the run still succeeds, the
champion is in the MLflow server and the serving replica in its namespace answers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from followrec import deploy
from followrec.cli import main

# ~5-7 min alone; beside another test worker (make test) up to twice that.
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.rabbitmq,
    pytest.mark.netns,
    pytest.mark.timeout(1200),
]


class Airflow:
    def __init__(self, endpoints: dict) -> None:
        self.base = endpoints["airflow"]["url"]
        login = {k: endpoints["airflow"][k] for k in ("username", "password")}
        token = httpx.post(f"{self.base}/auth/token", json=login, timeout=30)
        token.raise_for_status()
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def get(self, path: str) -> dict:
        reply = httpx.get(f"{self.base}/api/v2{path}", headers=self.headers, timeout=30)
        reply.raise_for_status()
        return reply.json()

    def trigger(self, dag: str, conf: dict) -> str:
        body = {"logical_date": None, "conf": conf}
        reply = httpx.post(f"{self.base}/api/v2/dags/{dag}/dagRuns", json=body,
                           headers=self.headers, timeout=30)  # fmt: skip
        reply.raise_for_status()
        return reply.json()["dag_run_id"]

    def runs(self, dag: str) -> list[dict]:
        return self.get(f"/dags/{dag}/dagRuns")["dag_runs"]

    def tasks(self, dag: str, run_id: str) -> list[dict]:
        return self.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def wait(self, dag: str, seconds: float, until=None) -> dict:  # noqa: ANN001
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            runs = self.runs(dag)
            if runs and (until is None or until(runs[-1])):
                return runs[-1]
            time.sleep(3)
        raise AssertionError(f"{dag}: no run reached the state in {seconds} s: {self.runs(dag)}")


def finished(run: dict) -> bool:
    return run["state"] in ("success", "failed")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy") / "deploy"
    deploy.down(folder, purge=True)  # whatever an earlier, interrupted run left
    assert main(["deploy", "up", "--run", str(folder)]) == 0
    try:
        yield folder
    finally:
        assert main(["deploy", "down", "--run", str(folder), "--purge"]) == 0
        assert not [ns for ns in os.popen("ip netns list").read().split() if ns.startswith("fr-")]


def test_pipeline_through_the_deployed_topology_survives_a_killed_worker(deployment):
    endpoints = json.loads((deployment / "endpoints.json").read_text())
    airflow = Airflow(endpoints)
    started = time.monotonic()
    airflow.trigger("followrec_features", {
        "run_dir": endpoints["run_dir"], "dataset": "twitch", "twitch_languages": ["PTBR"],
        "online_store": "redis", "extra_settings": ["train.epochs=3"],
    })  # fmt: skip
    features = airflow.wait("followrec_features", 600, finished)
    assert features["state"] == "success", airflow.tasks(
        "followrec_features", features["dag_run_id"]
    )
    features_seconds = time.monotonic() - started

    # followrec_training starts from the features Asset event, on the run folder it names.
    training = airflow.wait("followrec_training", 120)
    assert training["run_type"] == "asset_triggered"
    run_id = training["dag_run_id"]
    deadline = time.monotonic() + 300
    while True:  # kill -9 the worker running `train` while it trains
        train = {t["task_id"]: t for t in airflow.tasks("followrec_training", run_id)}["train"]
        if train["state"] == "running" and train["hostname"]:
            break
        assert time.monotonic() < deadline, train
        time.sleep(1)
    victim = train["hostname"]
    assert deploy.kill_host(victim)  # the worker and its task process die at once
    training = airflow.wait("followrec_training", 900, finished)
    tasks = {t["task_id"]: t for t in airflow.tasks("followrec_training", run_id)}
    assert training["state"] == "success", tasks
    assert tasks["train"]["try_number"] == 2 and tasks["train"]["hostname"] != victim
    pipeline_seconds = time.monotonic() - started

    # Tasks of one pipeline ran on both workers.
    hosts = {t["hostname"] for t in airflow.tasks("followrec_features", features["dag_run_id"])}
    hosts |= {t["hostname"] for t in tasks.values()}
    assert {"worker-1", "worker-2"} <= hosts

    # The champion is in the MLflow tracking server (PostgreSQL backend, served artifacts).
    client = MlflowClient(tracking_uri=endpoints["mlflow"]["url"])
    champion = client.get_model_version_by_alias("followrec-two-tower", "champion")
    assert champion.tags["index.version"] == f"model-v{champion.version}"

    # `up` again restarts the killed worker and starts the serving replica (a run exists).
    assert main(["deploy", "up", "--run", str(deployment)]) == 0
    status = deploy.status(deployment)
    assert all(state == "running" for state in status["processes"].values()), status
    url = endpoints["serving"]["urls"][0]
    assert url.startswith("http://10.231.0.")  # in its own namespace
    headers = {"X-API-Key": endpoints["serving"]["api_key"]}
    deadline = time.monotonic() + 180
    while True:
        try:
            ready = httpx.get(f"{url}/readyz", timeout=5)
            if ready.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the serving replica never became ready"
        time.sleep(2)
    assert ready.json()["model_version"] == str(champion.version)
    body = httpx.get(f"{url}/v1/users/0/candidates", params={"k": 5}, headers=headers,
                     timeout=30).json()  # fmt: skip
    assert len(body["candidates"]) == 5 and body["model_version"] == str(champion.version)
    assert httpx.get(f"{url}/v1/users/0/candidates", timeout=30).status_code == 401
    # What the README reports (PTBR through the deployed topology), when asked.
    timings = {"features_seconds": features_seconds, "pipeline_seconds": pipeline_seconds}
    print(f"deployed PTBR pipeline: {timings}")
    if os.environ.get("FOLLOWREC_DEPLOY_TIMINGS"):
        Path(os.environ["FOLLOWREC_DEPLOY_TIMINGS"]).write_text(json.dumps(timings))
