"""The scored narrow sources (friends-of-friends, co-follow CF) with their user blocks on
several threads (`evaluation.baselines.CHUNK_THREADS`, the default) against one thread, in
one process on the Twitch union's holdout users; the two alternate, so that the machine's
drift from one minute to the next hits both. Each rep also checks that both give the same
lists.

    .venv/bin/python benchmarks/sources.py --json runs/bench/sources.json

Prints seconds per source (median over reps) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# This folder holds a `training.py` named like the `training` package; keep it off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

SOURCES = ("friends_of_friends", "cofollow_cf")


def measure(reps: int, k: int) -> tuple[dict[str, dict[str, list[float]]], int, int]:
    """Seconds per source per rep, for each thread count; holdout users and threads used."""
    import numpy as np

    from followrec.core.config import load_config
    from followrec.evaluation import baselines
    from followrec.evaluation.evaluate import segments
    from followrec.features.ingest import load_dataset
    from followrec.features.split import split_dataset

    cfg = load_config(None, [])
    ds = load_dataset(cfg, progress=False)
    split = split_dataset(ds, cfg.split)
    ctx = baselines.GraphContext.from_train(
        split.train, ds.n_accounts, segments(ds), progress=False
    )
    users = split.eval_users()
    threads = baselines.CHUNK_THREADS
    seconds: dict[str, dict[str, list[float]]] = {
        f"{n} thread{'s' if n > 1 else ''}": {s: [] for s in SOURCES} for n in (1, threads)
    }
    for _ in range(reps):
        lists = []
        for label, n in zip(seconds, (1, threads)):
            baselines.CHUNK_THREADS = n
            for source in SOURCES:
                started = time.perf_counter()
                lists.append(baselines.SOURCES[source](ctx, users, k, cfg.baselines))
                seconds[label][source].append(time.perf_counter() - started)
        half = len(SOURCES)
        if not all(np.array_equal(a, b) for a, b in zip(lists[:half], lists[half:])):
            raise SystemExit("the threaded sources gave other lists than one thread")
    baselines.CHUNK_THREADS = threads
    return seconds, len(users), threads


def main() -> None:
    """Measure, print the table and write JSON."""
    import numpy as np

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--reps", type=int, default=3, help="alternated runs per variant")
    parser.add_argument("--k", type=int, default=200, help="list length (evaluate's largest K)")
    args = parser.parse_args()
    seconds, n_users, threads = measure(args.reps, args.k)
    one, many = list(seconds)
    median = {v: {s: float(np.median(t)) for s, t in by.items()} for v, by in seconds.items()}
    result = {
        "users": n_users,
        "k": args.k,
        "threads": threads,
        "seconds_median": median,
        "speedup": {s: round(median[one][s] / median[many][s], 3) for s in SOURCES},
        "seconds": seconds,
    }
    print(f"| source | {one} s | {many} s | ratio |\n|---|---|---|---|")
    for s in SOURCES:
        print(f"| {s} | {median[one][s]:.2f} | {median[many][s]:.2f} | {result['speedup'][s]}x |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
