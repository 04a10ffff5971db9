"""Feast's offline stores side by side on one run's feature snapshot: DuckDB (the default)
and the file (dask) store. Each gets its own Feast repo over the run's snapshot; the same
`materialize` and `historical_tables` (the training set's point-in-time join) the DAG tasks
call are timed in a child process each, and both stores' training sets and online rows are
checked equal.

    .venv/bin/python benchmarks/feast_stores.py --run runs/pipeline \\
        --json runs/bench/feast-stores-twitch.json
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

STORES = ("duckdb", "file")
CHILD = "--child"


def measure(run: Path, repo: Path, out: Path) -> dict:
    """materialize then historical_tables on `repo`; the training set is pickled to `out`."""
    from followrec.features import feature_store

    features = run / "features"
    started = time.perf_counter()
    feature_store.materialize(features, repo)
    materialize_seconds = time.perf_counter() - started
    started = time.perf_counter()
    tables = feature_store.historical_tables(features, repo)
    join_seconds = time.perf_counter() - started
    tables.consumer.to_pickle(out / "consumer.pkl")
    tables.producer.to_pickle(out / "producer.pkl")
    return {
        "materialize_seconds": round(materialize_seconds, 1),
        "training_set_seconds": round(join_seconds, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def new_repo(run: Path, store: str, where: Path) -> Path:
    """A Feast repo over the run's feature snapshot, applied as the feast_apply task does,
    with this offline store and its own embedded registry and online store."""
    from followrec.core.config import FeastConfig
    from followrec.features.feature_store import apply

    repo = where / store
    project = yaml.safe_load((run / "feast" / "feature_store.yaml").read_text())["project"]
    apply(FeastConfig(project=project, offline_store=store), run / "features", repo)
    return repo


def same_tables(a: Path, b: Path) -> bool:
    """Both stores' training sets hold the same values."""
    import numpy as np
    import pandas as pd

    for name in ("consumer.pkl", "producer.pkl"):
        x, y = pd.read_pickle(a / name), pd.read_pickle(b / name)
        if list(x.columns) != list(y.columns) or len(x) != len(y):
            return False
        for column in x.columns:
            if x[column].dtype == object:
                pairs = zip(x[column], y[column])
                if not all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in pairs):
                    return False
            elif not x[column].equals(y[column]):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a run folder the features DAG filled")
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument(CHILD, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    run = Path(args.run).resolve()
    if args.child:
        repo, out = map(Path, args.child)
        print(json.dumps(measure(run, repo, out)))
        return
    rows = {}
    with tempfile.TemporaryDirectory(prefix="feast-stores-") as tmp:
        for store in STORES:
            repo = new_repo(run, store, Path(tmp))
            out = Path(tmp) / f"{store}-tables"
            out.mkdir()
            proc = subprocess.run(
                [sys.executable, __file__, "--run", str(run), "--json", args.json, CHILD,
                 str(repo), str(out)],
                capture_output=True, text=True,
            )  # fmt: skip
            if proc.returncode != 0:
                sys.exit(f"{store} failed:\n{proc.stderr[-3000:]}")
            rows[store] = json.loads(proc.stdout.strip().splitlines()[-1])
        equal = same_tables(Path(tmp) / "duckdb-tables", Path(tmp) / "file-tables")
    manifest = json.loads((run / "features" / "manifest.json").read_text())
    result = {"run": str(run), "rows": manifest["rows"], "stores": rows, "same_tables": equal}
    print("| offline store | materialize s | training set s | peak RSS GB |")
    print("|---|---|---|---|")
    for store, row in rows.items():
        print(
            f"| {store} | {row['materialize_seconds']} | {row['training_set_seconds']} "
            f"| {row['peak_rss_gb']} |"
        )
    base, peer = rows["duckdb"], rows["file"]
    ratios = {
        stage: round(peer[f"{stage}_seconds"] / max(base[f"{stage}_seconds"], 0.1), 1)
        for stage in ("materialize", "training_set")
    }
    result["file_over_duckdb"] = ratios
    print(f"file / duckdb: {ratios}; same training set: {equal}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
