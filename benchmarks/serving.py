"""Load test of the candidate service: latency percentiles and throughput at several
concurrency levels, and the share of server time in feature lookup, tower and search.

Loopback only and bounded (a fixed number of requests per level). Either point it at a
running service, or give a run folder and it starts `followrec serve` itself, once per
online store (SQLite as the run has it; Redis on a copy re-applied and materialized there):

    .venv/bin/python benchmarks/serving.py --url http://127.0.0.1:8000 --json out.json
    .venv/bin/python benchmarks/serving.py --run runs/pipeline --stores sqlite,redis \\
        --json runs/bench/serving.json

Requests ask for k=100 candidates of random users; with --run the servers start with the
result cache off (serving.cache_size=0) so every request does the full path, once per
--workers count (`followrec serve --workers N`); the memory of the service's processes (the
supervisor and its workers) is reported beside the latencies.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlparse

# This file is named like the `serving` package; keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
STAGES = ("features", "tower", "search", "rerank")


def stage_sums(text: str) -> dict[str, float]:
    """followrec_stage_seconds_sum per stage from /metrics text."""
    found = re.findall(r'followrec_stage_seconds_sum\{stage="(\w+)"\} ([0-9.e+-]+)', text)
    return {stage: float(value) for stage, value in found}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def load_level(
    url: str, users: int, concurrency: int, requests: int, k: int, seed: int, client: str = "async"
) -> dict:
    """`requests` GETs spread over `concurrency` connections; latency per request in ms."""
    import httpx

    before = stage_sums(httpx.get(f"{url}/metrics").text)
    started = time.perf_counter()
    send = _async_requests if client == "async" else _threaded_requests
    latencies, errors = send(url, users, concurrency, requests, k, seed)
    wall = time.perf_counter() - started
    after = stage_sums(httpx.get(f"{url}/metrics").text)
    spent = {s: after.get(s, 0.0) - before.get(s, 0.0) for s in STAGES}
    total = sum(spent.values()) or 1.0
    return {
        "concurrency": concurrency,
        "client": client,
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "p50_ms": round(percentile(latencies, 50), 2) if latencies else None,
        "p95_ms": round(percentile(latencies, 95), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
        "throughput_rps": round(len(latencies) / wall, 1),
        "server_share": {s: round(spent[s] / total, 3) for s in STAGES},
        "server_ms_per_request": {
            s: round(1000 * spent[s] / max(len(latencies), 1), 3) for s in STAGES
        },
    }


def _async_requests(
    url: str, users: int, concurrency: int, requests: int, k: int, seed: int
) -> tuple[list[float], list[str]]:
    """One asyncio loop with `concurrency` keep-alive connections (aiohttp): the client's
    own CPU per request is a fraction of a thread-per-connection client's, which matters
    when client and server share the cores."""
    import asyncio

    import aiohttp

    latencies: list[float] = []
    errors: list[str] = []
    per_task = max(1, requests // concurrency)

    async def one_connection(session: aiohttp.ClientSession, index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        for _ in range(per_task):
            user = rng.randrange(users)
            started = time.perf_counter()
            try:
                async with session.get(f"/v1/users/{user}/candidates", params={"k": k}) as r:
                    await r.read()
                    ok, detail = r.status == 200, f"{r.status}"
            except aiohttp.ClientError as exc:
                ok, detail = False, repr(exc)
            elapsed = (time.perf_counter() - started) * 1000
            (latencies.append(elapsed) if ok else errors.append(detail))

    async def all_connections() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(one_connection(session, i) for i in range(concurrency)))

    asyncio.run(all_connections())
    return latencies, errors


def _threaded_requests(
    url: str, users: int, concurrency: int, requests: int, k: int, seed: int
) -> tuple[list[float], list[str]]:
    """A thread per connection (httpx), as the earlier figures were measured."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_thread = max(1, requests // concurrency)

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(per_thread):
                user = rng.randrange(users)
                started = time.perf_counter()
                try:
                    response = client.get(f"/v1/users/{user}/candidates", params={"k": k})
                    ok = response.status_code == 200
                    detail = f"{response.status_code}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    (latencies.append(elapsed) if ok else errors.append(detail))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def service_memory(url: str) -> dict:
    """Resident memory of the service: the process listening on the port, or with several
    workers their supervisor (`followrec serve`), and every process under it."""
    import psutil

    port = urlparse(url).port
    listening = next(
        c.pid for c in psutil.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid
    )  # fmt: skip
    top = psutil.Process(listening)
    parent = top.parent()
    if (
        parent is not None
        and "serve" in parent.cmdline()
        and "followrec" in " ".join(parent.cmdline())
    ):
        top = parent
    processes = [top, *top.children(recursive=True)]
    rss = sum(p.memory_info().rss for p in processes)
    return {"processes": len(processes), "rss_mb": round(rss / 2**20, 1)}


def bench_url(url: str, levels: list[int], requests: int, k: int, clients: list[str]) -> dict:
    import httpx

    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"--url must be a loopback address (got host {host!r})")
    ready = httpx.get(f"{url}/readyz", timeout=10).json()
    users = int(ready["producers"])
    load_level(url, users, 2, 40, k, seed=0)  # warm-up: connections, lazy imports
    rows = [
        load_level(url, users, c, requests, k, seed=c, client=client)
        for client in clients
        for c in levels
    ]
    return {"url": url, "serving": ready, "levels": rows, "memory": service_memory(url)}


def redis_copy(run: Path, target: Path) -> Path:
    """The run's serving state with Feast re-applied to Redis and materialized."""
    from followrec.cli import main

    skip = shutil.ignore_patterns(
        "airflow-home", "staged", "checkpoints", "raw", "validation", "serving", "serve-*.log"
    )
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run, target, ignore=skip)
    redis = ["--set", "feast.online_store=redis", "--set", "feast.project=followrec_bench"]
    for step in ("feast_apply", "materialize"):
        if main(["step", step, "--run", str(target), "--quiet", *redis]) != 0:
            raise SystemExit(f"could not {step} the Redis copy")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", required=True, help="where to write the results")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running service on loopback")
    where.add_argument("--run", help="a run folder: start the service(s) here")
    parser.add_argument("--stores", default="sqlite,redis", help="with --run: sqlite,redis")
    parser.add_argument("--concurrency", default="1,4,16", help="levels, comma-separated")
    parser.add_argument("--requests", type=int, default=400, help="requests per level")
    parser.add_argument("--workers", default="1", help="with --run: worker counts, e.g. 1,2")
    parser.add_argument("--k", type=int, default=100, help="candidates per request")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --run: a setting for the service(s), e.g. serving.threads=4 (repeatable)",
    )
    parser.add_argument(
        "--clients",
        default="async",
        help="load generators, comma-separated: async (one asyncio loop, aiohttp) and/or "
        "threads (a thread per connection, httpx; heavier on the shared cores)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    clients = args.clients.split(",")
    for client in clients:
        if client not in ("async", "threads"):
            raise SystemExit(f"--clients: unknown client {client!r}; expected async, threads")

    results: dict = {"k": args.k, "requests_per_level": args.requests, "stores": {}}
    if args.url:
        results["stores"]["given"] = bench_url(args.url, levels, args.requests, args.k, clients)
    else:
        from followrec.serving.launch import running_service

        run = Path(args.run)
        for store in args.stores.split(","):
            if store not in ("sqlite", "redis"):
                raise SystemExit(f"--stores: unknown store {store!r}; expected sqlite, redis")
            target = run if store == "sqlite" else redis_copy(run, run.parent / "bench-redis")
            for workers in [int(w) for w in args.workers.split(",")]:
                with ExitStack() as stack:
                    url = stack.enter_context(
                        running_service(target, "--set", "serving.cache_size=0", "--set",
                                        "serving.poll_seconds=0", "--workers", str(workers),
                                        *[a for kv in args.set for a in ("--set", kv)])
                    )  # fmt: skip
                    name = store if workers == 1 else f"{store}-w{workers}"
                    results["stores"][name] = bench_url(url, levels, args.requests, args.k, clients)

    header = (
        f"{'store':8s} {'client':7s} {'conc':>4s} {'req':>5s} {'err':>4s} {'p50 ms':>8s} "
        f"{'p95 ms':>8s} {'p99 ms':>8s} {'req/s':>7s}  features/tower/search share  service MB"
    )
    print(header)
    for store, out in results["stores"].items():
        for row in out["levels"]:
            share = row["server_share"]
            print(
                f"{store:8s} {row['client']:7s} {row['concurrency']:4d} {row['requests']:5d} "
                f"{row['errors']:4d} "
                f"{row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['p99_ms']:8.2f} "
                f"{row['throughput_rps']:7.1f}  {share['features']:.2f}/{share['tower']:.2f}/"
                f"{share['search']:.2f}  {out['memory']['rss_mb']:10.0f}"
            )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
