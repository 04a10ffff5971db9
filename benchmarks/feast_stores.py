"""Feast's stores side by side on one run's feature snapshot: the offline stores DuckDB (the
default) and file (dask), and the online stores SQLite (the default) and Redis. Each pair of
stores gets its own Feast repo over the run's snapshot; the same `materialize` and
`historical_tables` (the training set's point-in-time join) the DAG tasks call are timed in a
child process each. Every pair's training set is checked equal to the first pair's, and every
pair's online rows for a sample of users equal to the first pair's.

    .venv/bin/python benchmarks/feast_stores.py --run runs/pipeline \\
        --json runs/bench/feast-stores-twitch.json
    .venv/bin/python benchmarks/feast_stores.py --run runs/bench/pipeline-1m --offline duckdb \\
        --online sqlite,redis --json runs/bench/feast-stores-1m.json

A Redis repo's rows are removed from Redis (Feast's teardown) once it has been measured.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

OFFLINE_STORES = ("duckdb", "file")
ONLINE_STORES = ("sqlite", "redis")
SAMPLE_USERS = 1000
CHILD = "--child"
TABLES = ("consumer.pkl", "producer.pkl")


def measure(run: Path, repo: Path, out: Path) -> dict:
    """materialize then historical_tables on `repo`; the training set and a sample of online
    rows are pickled to `out`. A Redis repo is torn down afterwards."""
    import numpy as np

    from followrec.features import feature_store

    features = run / "features"
    try:
        started = time.perf_counter()
        feature_store.materialize(features, repo)
        materialize_seconds = time.perf_counter() - started
        started = time.perf_counter()
        tables = feature_store.historical_tables(features, repo)
        join_seconds = time.perf_counter() - started
        tables.consumer.to_pickle(out / "consumer.pkl")
        tables.producer.to_pickle(out / "producer.pkl")
        users = tables.consumer["user_id"].to_numpy()
        sample = np.random.default_rng(0).choice(
            users, min(SAMPLE_USERS, len(users)), replace=False
        )
        service = feature_store.read_manifest(features)["services"]["consumer"]
        online = feature_store.online_features(repo, service, "user_id", sorted(sample.tolist()))
        # Feast returns the features in no fixed order.
        online = online[sorted(online.columns)].sort_values("user_id", ignore_index=True)
        online.to_pickle(out / "online.pkl")
    finally:
        if (
            yaml.safe_load((repo / "feature_store.yaml").read_text())["online_store"]["type"]
            == "redis"
        ):
            feature_store.open_store(repo).teardown()
    return {
        "materialize_seconds": round(materialize_seconds, 1),
        "training_set_seconds": round(join_seconds, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def new_repo(run: Path, offline: str, online: str, redis: str, where: Path) -> Path:
    """A Feast repo over the run's feature snapshot, applied as the feast_apply task does,
    with these stores and its own embedded registry."""
    from followrec.core.config import FeastConfig
    from followrec.features.feature_store import apply

    repo = where / f"{offline}-{online}"
    project = yaml.safe_load((run / "feast" / "feature_store.yaml").read_text())["project"]
    cfg = FeastConfig(
        # Its own project: Feast's teardown of a Redis repo removes the project's keys.
        project=f"{project}_bench",
        offline_store=offline,
        online_store=online,
        redis_connection=redis,
    )
    apply(cfg, run / "features", repo)
    return repo


def differing_columns(a: Path, b: Path) -> list[str]:
    """Columns whose values differ between the two pickled frames (arrays compared by value);
    a difference in the column set or the row count names every column."""
    import numpy as np
    import pandas as pd

    x, y = pd.read_pickle(a), pd.read_pickle(b)
    if list(x.columns) != list(y.columns) or len(x) != len(y):
        return sorted(set(x.columns) | set(y.columns))
    differ = []
    for column in x.columns:
        if x[column].dtype == object:
            pairs = zip(x[column], y[column])
            same = all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in pairs)
        else:
            same = x[column].equals(y[column])
        if not same:
            differ.append(column)
    return differ


def names(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    """A comma-separated store list, each name checked."""
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        sys.exit(f"{flag}: expected some of {', '.join(allowed)}, got {value!r}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a run folder the features DAG filled")
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--offline", default="duckdb,file", help="offline stores to measure")
    parser.add_argument("--online", default="sqlite", help="online stores: sqlite, redis")
    parser.add_argument("--redis", default="127.0.0.1:6379", help="Redis host:port[,db=N]")
    parser.add_argument(CHILD, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    run = Path(args.run).resolve()
    if args.child:
        repo, out = map(Path, args.child)
        print(json.dumps(measure(run, repo, out)))
        return
    pairs = [
        (offline, online)
        for offline in names(args.offline, OFFLINE_STORES, "--offline")
        for online in names(args.online, ONLINE_STORES, "--online")
    ]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="feast-stores-") as tmp:
        outs = []
        for offline, online in pairs:
            repo = new_repo(run, offline, online, args.redis, Path(tmp))
            out = Path(tmp) / f"{offline}-{online}-tables"
            out.mkdir()
            proc = subprocess.run(
                [sys.executable, __file__, "--run", str(run), "--json", args.json, CHILD,
                 str(repo), str(out)],
                capture_output=True, text=True,
            )  # fmt: skip
            if proc.returncode != 0:
                sys.exit(f"{offline} + {online} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            # The first pair is the reference; comparing it with itself would only read its
            # tables twice (at 1M accounts, seconds of list-column comparisons).
            row["training_set_differs"], row["online_rows_differ"] = [], []
            if outs:
                reference = outs[0]
                row["training_set_differs"] = [
                    f"{t.removesuffix('.pkl')}.{c}"
                    for t in TABLES
                    for c in differing_columns(reference / t, out / t)
                ]
                row["online_rows_differ"] = differing_columns(
                    reference / "online.pkl", out / "online.pkl"
                )
            rows[f"{offline} + {online}"] = {"offline": offline, "online": online, **row}
            outs.append(out)
    manifest = json.loads((run / "features" / "manifest.json").read_text())
    first = next(iter(rows))
    print(f"{manifest['rows']}; the same training set and online rows as {first}:")
    print("| offline + online store | materialize s | training set s | peak RSS GB | same |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        for stage in ("materialize", "training_set"):
            row[f"{stage}_over_first"] = round(
                row[f"{stage}_seconds"] / max(rows[first][f"{stage}_seconds"], 0.1), 2
            )
        differ = row["training_set_differs"] + [f"online.{c}" for c in row["online_rows_differ"]]
        same = "yes" if not differ else "NO: " + ", ".join(differ)
        print(
            f"| {name} | {row['materialize_seconds']} ({row['materialize_over_first']}x) "
            f"| {row['training_set_seconds']} ({row['training_set_over_first']}x) "
            f"| {row['peak_rss_gb']} | {same} |"
        )
    result = {"run": str(run), "rows": manifest["rows"], "stores": rows, "reference": first}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
