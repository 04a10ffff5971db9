"""Re-rank, cache and metrics pieces of the service."""

import numpy as np
import pytest

from followrec.serving.cache import ResultCache
from followrec.serving.metrics import Metrics, SharedMetrics
from followrec.serving.rerank import discount, mmr
from followrec.serving.shared import Generations, WorkerLock


def test_mmr_without_diversity_is_the_score_order_and_with_it_skips_near_duplicates():
    scores = np.array([0.9, 0.89, 0.5, 0.3])
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    assert mmr(scores, vectors, 3, 0.0).tolist() == [0, 1, 2]
    assert mmr(scores, vectors, 3, 0.5).tolist()[:2] == [0, 2]  # the twin of 0 waits
    assert sorted(mmr(scores, vectors, 10, 0.5).tolist()) == [0, 1, 2, 3]


def test_popularity_discount_lowers_popular_accounts_in_proportion():
    scores = np.array([0.8, 0.79])
    adjusted = discount(scores, np.array([1.0, 0.0]), 0.5)
    assert np.allclose(adjusted, [0.3, 0.79])
    assert np.allclose(discount(scores, np.array([1.0, 0.0]), 0.0), scores)


def test_cache_is_bounded_and_an_event_retires_only_that_user():
    cache = ResultCache(2)
    cache.put(1, "a", "one")
    cache.put(2, "a", "two")
    assert cache.get(1, "a") == "one"
    cache.put(3, "a", "three")  # 2 was least recently used
    assert cache.get(2, "a") is None and len(cache) == 2
    cache.invalidate(1)
    assert cache.get(1, "a") is None and cache.get(3, "a") == "three"
    assert ResultCache(0).get(1, "a") is None


def test_cache_state_stays_bounded_under_events_for_many_users():
    cache = ResultCache(3)
    for user in range(1000):
        cache.put(user, "a", user)
        cache.invalidate(user + 500)  # events for users that may have nothing cached
    assert len(cache) == 3 and cache.users() <= 3
    assert [cache.get(u, "a") for u in (997, 998, 999)] == [997, 998, 999]


def test_metrics_render_a_cumulative_histogram_and_hit_ratio():
    metrics = Metrics()
    for seconds in (0.002, 0.02, 3.0):
        metrics.observe_request("/x", seconds)
    metrics.count("followrec_cache_hits_total")
    metrics.count("followrec_cache_misses_total", 3)
    metrics.served = ("4", "model-v4")
    text = metrics.render()
    assert 'followrec_request_seconds_bucket{route="/x",le="0.0025"} 1' in text
    assert 'followrec_request_seconds_bucket{route="/x",le="0.025"} 2' in text
    assert 'followrec_request_seconds_bucket{route="/x",le="+Inf"} 3' in text
    assert "followrec_cache_hit_ratio 0.250000" in text
    assert 'followrec_serving_info{model_version="4",index_version="model-v4"} 1' in text


def test_workers_sharing_generations_retire_each_others_cached_results(tmp_path):
    first = ResultCache(10, Generations(tmp_path / "generations.bin"))
    second = ResultCache(10, Generations(tmp_path / "generations.bin"))  # another worker
    first.put(7, "a", "seven")
    second.put(7, "a", "seven, there")
    second.put(8, "a", "eight, there")
    first.invalidate(7)  # an event for user 7 reached the first worker
    assert first.get(7, "a") is None and second.get(7, "a") is None
    assert second.get(8, "a") == "eight, there"
    # A result computed from the state before an event is not kept as current.
    stamp = second.generation(9)
    first.invalidate(9)
    second.put(9, "a", "nine, stale", stamp)
    assert second.get(9, "a") is None
    assert len(second) == 1  # the retired entries are gone, not only hidden


def test_metrics_of_several_workers_add_up(tmp_path):
    workers = [Metrics(), Metrics()]
    for n, metrics in enumerate(workers, start=1):
        metrics.count("followrec_requests_total", n, route="/v1", status="200")
        metrics.count("followrec_cache_hits_total", n)
        metrics.observe_request("/v1", 0.02 * n)
        metrics.observe_stages({"tower": 0.5 * n})
    shares = [SharedMetrics(tmp_path / "metrics", m) for m in workers]
    shares[1].own = tmp_path / "metrics" / "other-worker.json"  # a second process's file
    assert shares[0].others() == []  # nothing written yet
    shares[1].write()
    text = shares[0].render()
    assert 'followrec_requests_total{route="/v1",status="200"} 3' in text
    assert 'followrec_request_seconds_bucket{route="/v1",le="0.025"} 1' in text
    assert 'followrec_request_seconds_count{route="/v1"} 2' in text
    assert 'followrec_stage_seconds_sum{stage="tower"} 1.500000' in text
    assert "followrec_cache_hit_ratio 1.000000" in text
    assert text == workers[0].render([workers[1].snapshot()])


def _add_under_lock(lock_path, counter_path, times):
    lock = WorkerLock(lock_path)
    for _ in range(times):
        with lock.held():  # a read-modify-write that loses updates without the lock
            value = int(counter_path.read_text())
            counter_path.write_text(str(value + 1))


def test_the_event_lock_serializes_writers_across_processes(tmp_path):
    import multiprocessing

    counter = tmp_path / "counter"
    counter.write_text("0")
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_add_under_lock, args=(tmp_path / "lock", counter, 200))
        for _ in range(3)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert int(counter.read_text()) == 600


def test_requests_run_on_the_configured_number_of_threads(tmp_path):
    from anyio import to_thread
    from fastapi.testclient import TestClient

    from followrec.core.config import load_config
    from followrec.core.errors import InputError
    from followrec.serving.app import create_app
    from followrec.serving.server import build_app, serve

    def no_champion():
        raise FileNotFoundError("no run here")

    app = create_app(no_champion, poll_seconds=0, request_threads=3)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        limiter = client.portal.call(lambda: to_thread.current_default_thread_limiter())
        assert limiter.total_tokens == 3
    with pytest.raises(InputError) as bad:
        build_app(load_config(None, ["serving.threads=0"]), tmp_path)
    assert "serving.threads" in str(bad.value)
    # Refused before any worker process starts, not inside each of them.
    with pytest.raises(InputError) as bad:
        serve(load_config(None, ["serving.threads=0", "serving.workers=2"]), tmp_path, None, 0)
    assert "serving.threads" in str(bad.value)


def test_the_heap_is_frozen_once_a_champion_loads():
    import gc
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from followrec.serving.app import create_app

    champion = SimpleNamespace(pair=SimpleNamespace(versions=("1", "model-v1")))
    gc.unfreeze()
    try:
        with TestClient(create_app(lambda: champion, poll_seconds=0)):
            # Start-up objects are out of the collector's reach: no full collection walks them.
            assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
