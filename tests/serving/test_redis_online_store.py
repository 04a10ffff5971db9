"""The service on the machine's Redis as its Feast online store answers what the embedded
SQLite store answers, and events pushed through Feast land in Redis."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from followrec.cli import main
from tests.serving.conftest import running_service

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_service_on_redis_matches_sqlite(pipeline_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pipeline_run, run, ignore=shutil.ignore_patterns("serving"))
    redis = ["--set", "feast.online_store=redis", "--set", f"feast.project=serving_{os.getpid()}"]
    assert main(["step", "feast_apply", "--run", str(run), "--quiet", *redis]) == 0
    assert main(["step", "materialize", "--run", str(run), "--quiet", *redis]) == 0
    assert "type: redis" in (run / "feast" / "feature_store.yaml").read_text()

    users = [3, 50, 400, 10**12]
    with running_service(pipeline_run) as sqlite_url, running_service(run) as redis_url:
        for user in users:
            a = httpx.get(f"{sqlite_url}/v1/users/{user}/candidates", params={"k": 25}).json()
            b = httpx.get(f"{redis_url}/v1/users/{user}/candidates", params={"k": 25}).json()
            assert [c["account_id"] for c in a["candidates"]] == [
                c["account_id"] for c in b["candidates"]
            ]
            assert a["cold_start"] == b["cold_start"]
        top = b["candidates"][0]["account_id"]
        event = {"user_id": 50, "type": "follow", "account_id": top}
        assert httpx.post(f"{redis_url}/v1/events", json=event).status_code == 200
        after = httpx.get(f"{redis_url}/v1/users/50/candidates", params={"k": 25}).json()
        assert top not in [c["account_id"] for c in after["candidates"]]
