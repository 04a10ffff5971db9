"""The candidate service over a real pipeline run: each endpoint, filters, cold start,
events through the Feast push source, auth, input errors and a schema-driven fuzz run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from followrec.serving.app import CandidatesBody
from tests.serving.conftest import ADMIN_KEY, API_KEY, KEYS, running_service, wait_for

pytestmark = pytest.mark.slow


def consumer_row(run: Path, user_id: int) -> pd.Series:
    table = pd.read_parquet(run / "features" / "consumer.parquet")
    return table.set_index("user_id").loc[user_id]


def active_user(run: Path, nth: int = 0) -> int:
    table = pd.read_parquet(run / "features" / "consumer.parquet")
    return int(table.loc[table["follow_count"].between(8, 40), "user_id"].iloc[nth])


def candidates(client: httpx.Client, user_id: int, **params) -> dict:
    response = client.get(f"/v1/users/{user_id}/candidates", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_candidates_exclude_self_and_follows_and_report_versions(client, pipeline_run):
    user = active_user(pipeline_run)
    body = candidates(client, user, k=50)
    ids = [c["account_id"] for c in body["candidates"]]
    assert len(ids) == 50 == len(set(ids))
    assert user not in ids
    assert not set(consumer_row(pipeline_run, user)["follows"]) & set(ids)
    scores = [c["score"] for c in body["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert (body["model_version"], body["index_version"]) == ("2", "model-v2")
    assert body["cold_start"] is False and body["cached"] is False
    assert set(body["latency_ms"]) >= {"features", "tower", "search", "total"}
    # The body is built by hand for speed: it must still be what the OpenAPI schema says.
    CandidatesBody.model_validate(body)
    documented = client.get("/openapi.json").json()["paths"]
    for path, method in (("/v1/users/{user_id}/candidates", "get"), ("/v1/candidates", "post")):
        schema = documented[path][method]["responses"]["200"]["content"]["application/json"]
        assert schema["schema"] == {"$ref": "#/components/schemas/CandidatesBody"}

    again = candidates(client, user, k=50)
    assert again["cached"] is True and again["candidates"] == body["candidates"]
    metrics = client.get("/metrics").text
    assert 'followrec_serving_info{model_version="2",index_version="model-v2"} 1' in metrics
    ratio = next(line for line in metrics.splitlines() if line.startswith("followrec_cache_hit"))
    assert float(ratio.split()[-1]) > 0
    assert 'followrec_request_seconds_bucket{route="/v1/users/{user_id}/candidates"' in metrics


def test_rerank_options_keep_k_and_change_the_order(client, pipeline_run):
    user = active_user(pipeline_run)
    plain = candidates(client, user, k=30)
    discounted = candidates(client, user, k=30, popularity_discount=1.0)
    diverse = candidates(client, user, k=30, diversity=0.9)
    for body in (discounted, diverse):
        assert len(body["candidates"]) == 30
    plain_ids = [c["account_id"] for c in plain["candidates"]]
    assert [c["account_id"] for c in discounted["candidates"]] != plain_ids
    assert [c["account_id"] for c in diverse["candidates"]] != plain_ids
    for c in discounted["candidates"]:
        assert c["score"] <= c["retrieval_score"] + 1e-9


def test_cold_start_unknown_user_and_onboarding_profile(client):
    unknown = candidates(client, 10**12, k=20)
    assert unknown["cold_start"] is True and len(unknown["candidates"]) == 20
    assert "unknown to the online feature store" in unknown["warnings"][0]

    onboarding = client.post(
        "/v1/candidates", json={"language": "pt", "interests": [1, 2, 3], "k": 20}
    )
    assert onboarding.status_code == 200, onboarding.text
    body = onboarding.json()
    CandidatesBody.model_validate(body)
    assert body["cold_start"] is True and body["warnings"] == []
    assert len(body["candidates"]) == 20
    other = client.post("/v1/candidates", json={"language": "pt", "interests": [40, 41], "k": 20})
    assert other.json()["candidates"] != body["candidates"]  # interests move the embedding

    unknown_lang = client.post("/v1/candidates", json={"language": "tlh", "k": 5}).json()
    assert "language 'tlh' is unknown" in unknown_lang["warnings"][0]
    bad = client.post("/v1/candidates", json={"interests": [10**9]})
    assert bad.status_code == 400 and bad.json()["field"] == "interests"


def test_events_reach_the_next_request(client, pipeline_run):
    user = active_user(pipeline_run, nth=1)  # events rewrite its online row: no other test reads it
    before = candidates(client, user, k=20)
    top = before["candidates"][0]["account_id"]
    count = int(consumer_row(pipeline_run, user)["follow_count"])

    followed = client.post(
        "/v1/events", json={"user_id": user, "type": "follow", "account_id": top}
    )
    assert followed.status_code == 200 and followed.json()["follow_count"] == count + 1
    after = candidates(client, user, k=20)
    assert after["cached"] is False
    after_ids = [c["account_id"] for c in after["candidates"]]
    assert top not in after_ids
    assert after["candidates"][0]["retrieval_score"] != before["candidates"][1]["retrieval_score"]

    client.post("/v1/events", json={"user_id": user, "type": "unfollow", "account_id": top})
    restored = candidates(client, user, k=20)
    assert top in [c["account_id"] for c in restored["candidates"]]  # it may come back

    second = restored["candidates"][1]["account_id"]
    client.post("/v1/events", json={"user_id": user, "type": "block", "account_id": second})
    assert second not in [c["account_id"] for c in candidates(client, user, k=20)["candidates"]]
    client.post("/v1/events", json={"user_id": user, "type": "unblock", "account_id": second})
    assert second in [c["account_id"] for c in candidates(client, user, k=20)["candidates"]]

    admin = {"X-API-Key": ADMIN_KEY}
    assert client.put(f"/v1/removed-accounts/{top}", headers=admin).status_code == 200
    client.post("/v1/events", json={"user_id": user, "type": "engagement", "account_id": 1})
    assert top not in [c["account_id"] for c in candidates(client, user, k=20)["candidates"]]
    assert client.delete(f"/v1/removed-accounts/{top}", headers=admin).status_code == 200

    newcomer = 10**11
    client.post("/v1/events", json={"user_id": newcomer, "type": "follow", "account_id": top})
    new_body = candidates(client, newcomer, k=10)
    assert top not in [c["account_id"] for c in new_body["candidates"]]


def test_api_key_is_required_on_v1_but_not_on_health(service):
    assert httpx.get(f"{service}/healthz").status_code == 200
    ready = httpx.get(f"{service}/readyz").json()
    assert ready["model_version"] == "2"
    assert set(ready) == {"status", "model_version", "index_version", "producers"}
    path = f"{service}/v1/users/1/candidates"
    assert httpx.get(path).status_code == 401
    assert httpx.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.get(path, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_admin_and_moderation_routes_take_the_admin_key_only(service):
    read, admin = {"X-API-Key": API_KEY}, {"X-API-Key": ADMIN_KEY}
    for method, path in [
        ("put", "/v1/removed-accounts/5"),
        ("delete", "/v1/removed-accounts/5"),
        ("post", "/v1/admin/refresh"),
        ("get", "/v1/admin/status"),
    ]:
        assert httpx.request(method, f"{service}{path}", headers=read).status_code == 401, path
        assert httpx.request(method, f"{service}{path}", headers=admin).status_code == 200, path
    status = httpx.get(f"{service}/v1/admin/status", headers=admin).json()
    assert {"feature_service", "last_refusal"} <= set(status)


def test_bodies_are_bounded_and_errors_echo_only_an_excerpt(client):
    huge = client.post("/v1/candidates", content=b"x" * 10_000_000)
    assert huge.status_code == 413 and len(huge.content) < 200

    def chunks():
        for _ in range(100):
            yield b"[" * 10_000

    streamed = client.post("/v1/candidates", content=chunks())  # chunked: no Content-Length
    assert streamed.status_code == 413
    long_language = client.post("/v1/candidates", json={"language": "x" * 50_000})
    assert long_language.status_code == 422 and len(long_language.content) < 1000
    assert "50000 chars" in long_language.json()["errors"][0]["value"]


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "field"),
    [
        ("get", "/v1/users/1/candidates?k=0", None, 422, "k"),
        ("get", "/v1/users/1/candidates?k=5000", None, 422, "k"),
        ("get", "/v1/users/1/candidates?k=ten", None, 422, "k"),
        ("get", "/v1/users/-3/candidates", None, 422, "user_id"),
        ("get", "/v1/users/1/candidates?diversity=2", None, 422, "diversity"),
        ("post", "/v1/events", {"user_id": 1, "type": "poke", "account_id": 2}, 422, "type"),
        ("post", "/v1/events", {"user_id": 1, "type": "follow", "account_id": 10**9}, 400,
         "account_id"),
        ("post", "/v1/candidates", {"follows": [1, -1]}, 422, "follows.1"),
        ("post", "/v1/candidates", {"colour": "red"}, 422, "colour"),
    ],
)  # fmt: skip
def test_invalid_input_is_a_4xx_naming_the_field(client, method, path, payload, status, field):
    response = client.request(method, path, json=payload)
    assert response.status_code == status, response.text
    body = response.json()
    assert body.get("field") == field or body["errors"][0]["field"] == field
    assert "Traceback" not in response.text


ADMIN_PATHS = "^/v1/(admin|removed-accounts)"


@pytest.mark.parametrize(
    ("key", "paths"),
    [(API_KEY, "--exclude-path-regex"), (ADMIN_KEY, "--include-path-regex")],
)
def test_schema_driven_fuzz_finds_no_server_error(service, key, paths):
    """Every phase (examples, coverage, fuzzing, stateful over inferred links), read routes
    with the read key and admin routes with the admin key."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "st"), "run", f"{service}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "1",
         paths, ADMIN_PATHS, "--header", f"X-API-Key: {key}", "--no-color"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "No issues found" in proc.stdout, proc.stdout[-2000:]
    assert "Stateful" in proc.stdout


def logged(log: Path, request_id: str) -> dict | None:
    """The service's JSON log line for a request (whole lines only: a worker may be writing)."""
    for line in log.read_text().split("\n")[:-1]:
        if line.startswith("{") and f'"request_id": "{request_id}"' in line:
            return json.loads(line)
    return None


def test_worker_processes_retire_each_others_cache_and_add_up_metrics(pipeline_run):
    """`serve --workers 2`: after an event reaches one worker, neither serves its cached list;
    /metrics counts the requests of both."""
    user = active_user(pipeline_run, nth=2)  # events rewrite its online row: no other test reads it
    with running_service(pipeline_run, "--workers", "2", env=KEYS) as url:
        log = pipeline_run.resolve().parent / f"serve-{url.rsplit(':', 1)[1]}.log"
        sent = 0

        def ask(tag: str) -> tuple[dict, int]:
            """One request on a new connection (the kernel picks the worker), and its pid."""
            nonlocal sent
            response = httpx.get(
                f"{url}/v1/users/{user}/candidates",
                params={"k": 20},
                headers={"X-API-Key": API_KEY, "X-Request-ID": tag},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            sent += 1
            line = wait_for(lambda: logged(log, tag), 10, f"the log line of {tag}")
            return response.json(), line["pid"]

        cached_by: dict[int, dict] = {}
        for i in range(60):  # until each worker has answered from its cache
            body, pid = ask(f"warm-{i}")
            if body["cached"]:
                cached_by[pid] = body
            if len(cached_by) == 2:
                break
        assert len(cached_by) == 2, "the kernel gave every connection to one worker"
        top = next(iter(cached_by.values()))["candidates"][0]["account_id"]
        followed = httpx.post(
            f"{url}/v1/events",
            json={"user_id": user, "type": "follow", "account_id": top},
            headers={"X-API-Key": API_KEY},
        )
        assert followed.status_code == 200, followed.text
        seen: set[int] = set()
        for i in range(60):
            body, pid = ask(f"after-{i}")
            assert top not in [c["account_id"] for c in body["candidates"]], (pid, body["cached"])
            seen.add(pid)
            if seen == set(cached_by):
                break
        assert seen == set(cached_by)

        route = "/v1/users/{user_id}/candidates"
        wait_for(
            lambda: f'followrec_requests_total{{route="{route}",status="200"}} {sent}'
            in httpx.get(f"{url}/metrics").text,
            10, f"/metrics to count {sent} requests over both workers",
        )  # fmt: skip
