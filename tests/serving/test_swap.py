"""Hot swap: the champion moves (rollback) while clients hammer the service; no request
fails and the service ends on the restored pair. A pair that does not fit is refused."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

from followrec.cli import main
from followrec.core.config import load_config
from followrec.registry.tracking import MODEL_NAME, registry_client
from followrec.serving.candidates import PairRefused, Recommender
from tests.serving.conftest import running_service

pytestmark = pytest.mark.slow


def test_swap_under_concurrent_load_fails_no_request(own_run):
    with running_service(own_run) as url:
        seen: list[tuple[str, str]] = []
        failures: list[str] = []
        stop = threading.Event()

        def hammer(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                user = worker
                while not stop.is_set():
                    user = (user + 7) % 1900
                    try:
                        r = c.get(f"/v1/users/{user}/candidates", params={"k": 20})
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    body = r.json()
                    seen.append((body["model_version"], body["index_version"]))

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        assert main(["rollback", "--run", str(own_run)]) == 0
        deadline = time.monotonic() + 60
        while not seen or seen[-1] != ("1", "model-v1"):
            assert time.monotonic() < deadline, seen[-5:]
            time.sleep(0.2)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert ("2", "model-v2") in seen and seen[-1] == ("1", "model-v1")
        first_new = seen.index(("1", "model-v1"))
        # Never a mixed pair, and once swapped only a straggler may still finish on the old.
        assert set(seen) == {("2", "model-v2"), ("1", "model-v1")}
        assert seen[first_new:].count(("2", "model-v2")) <= 4
        metrics = httpx.get(f"{url}/metrics").text
        assert 'followrec_swaps_total{outcome="swapped"} 1' in metrics


def test_a_mismatched_pair_is_refused_and_the_old_one_keeps_serving(own_run):
    root = own_run / "indexes"
    with running_service(own_run) as url:
        serving = httpx.get(f"{url}/readyz").json()
        current = serving["index_version"]
        model = serving["model_version"]
        bad = f"model-v{model}-refresh-mismatch"
        shutil.copytree(root / current, root / bad)
        manifest = json.loads((root / bad / "manifest.json").read_text())
        manifest["schema_hash"] = "deadbeef"
        (root / bad / "manifest.json").write_text(json.dumps(manifest))
        client = registry_client(f"sqlite:///{own_run / 'mlflow.db'}")
        client.set_model_version_tag(MODEL_NAME, model, "index.version", bad)
        try:
            deadline = time.monotonic() + 30
            status = f"{url}/v1/admin/status"  # no keys: a loopback service is open
            while "deadbeef" not in str(httpx.get(status).json()["last_refusal"]):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            body = httpx.get(f"{url}/v1/users/3/candidates").json()
            assert body["index_version"] == current
        finally:
            client.set_model_version_tag(MODEL_NAME, model, "index.version", current)


def test_a_model_needing_features_the_online_store_lacks_is_refused(pipeline_run, tmp_path):
    cfg = load_config(pipeline_run / "config.yaml")
    rec = Recommender(pipeline_run, cfg)
    model, index = rec.pair.versions
    original = rec._model_dir(model)
    changed = tmp_path / "model"
    shutil.copytree(original, changed)
    meta = json.loads((changed / "model.json").read_text())
    meta["schema"]["consumer"].append(
        {"name": "home_city", "kind": "categorical", "cardinality": 4}
    )
    (changed / "model.json").write_text(json.dumps(meta))
    rec._model_dir = lambda version: changed
    with pytest.raises(PairRefused, match="lacks: home_city"):
        rec.load_pair(model, index)


def test_users_created_by_events_are_bounded(own_run):
    with running_service(own_run, "--set", "serving.max_new_users=1") as url:
        first = {"user_id": 10**10, "type": "follow", "account_id": 3}
        assert httpx.post(f"{url}/v1/events", json=first).status_code == 200
        again = httpx.post(f"{url}/v1/events", json={**first, "account_id": 4})
        assert again.status_code == 200  # the same new user: no new row
        second = httpx.post(f"{url}/v1/events", json={**first, "user_id": 10**10 + 1})
        assert second.status_code == 400 and second.json()["field"] == "user_id"
        known = httpx.post(f"{url}/v1/events", json={**first, "user_id": 5})
        assert known.status_code == 200  # users of the snapshot are never refused


def test_a_host_without_index_copies_serves_the_champion_from_the_registry(pipeline_run, own_run):
    # Another host: the same registry and feature store, no index folder of its own.
    shutil.rmtree(own_run / "indexes")
    cfg = load_config(own_run / "config.yaml")
    here, there = Recommender(pipeline_run, cfg), Recommender(own_run, cfg)
    assert there.pair.versions == here.pair.versions
    version = here.pair.index_version
    for name in ("manifest.json", "account_ids.npy"):
        fetched = (own_run / "indexes" / version / name).read_bytes()
        assert fetched == (pipeline_run / "indexes" / version / name).read_bytes()
    for user in (0, 7, 1500):
        assert there.recommend(user, 50).account_ids == here.recommend(user, 50).account_ids
