"""Two-tower training throughput and peak memory per dataset, beside the ALS peer.

Each dataset runs in its own process so peak RSS is its own. Prints a table, writes JSON.

    .venv/bin/python benchmarks/training.py --json runs/bench/training.json
    .venv/bin/python benchmarks/training.py --datasets twitch --steps 300 --json out.json
    # how the id tables learn and the matmul precision, side by side on the same data:
    .venv/bin/python benchmarks/training.py --json runs/bench/training-variants.json \
        --variants "sparse_ids=never;sparse_ids=always;sparse_ids=rows;precision=bf16"
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CHILD = "--child"
# This file is named like the `training` package; keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def measure(
    dataset: str, steps: int, accounts: int, als_iterations: int, variants: list[str]
) -> list[dict]:
    """Load, split, fit a bounded number of training steps per variant (train.* settings),
    and time ALS on the same data."""
    import numpy as np

    from followrec.core.config import load_config
    from followrec.evaluation.baselines import GraphContext, als
    from followrec.features.ingest import load_dataset
    from followrec.features.split import split_dataset
    from followrec.training.train import train_two_tower

    overrides = [f"train.max_steps={steps}", "train.epochs=1", "train.validation_users=500"]
    if dataset == "synthetic":
        overrides += [
            "data.dataset=synthetic",
            f"synthetic.n_accounts={accounts}",
            "synthetic.mean_follows=25",
        ]
    cfg = load_config(None, overrides)
    started = time.perf_counter()
    ds = load_dataset(cfg, progress=False)
    split = split_dataset(ds, cfg.split)
    load_seconds = time.perf_counter() - started
    rows = []
    for variant in variants:
        settings = [f"train.{item}" for item in variant.split(",") if item]
        trained = train_two_tower(
            ds, split, load_config(None, overrides + settings), progress=False
        )
        rows.append(
            {
                "dataset": ds.name,
                "variant": variant or "defaults",
                "accounts": ds.n_accounts,
                "train_follows": int(len(split.train)),
                "load_split_seconds": round(load_seconds, 1),
                "steps": steps,
                "batch_size": cfg.train.batch_size,
                "examples_per_second": round(trained.examples_per_second),
                "fit_seconds_incl_features_and_validation": round(trained.seconds, 1),
                "epoch_seconds_estimate": round(
                    len(split.train) * 0.9 / trained.examples_per_second, 1
                ),
            }
        )
    # The peer: implicit's ALS on the same training follows.
    ctx = GraphContext.from_train(
        split.train, ds.n_accounts, np.zeros(ds.n_accounts, int), progress=False
    )
    als_cfg = type(cfg.baselines)(als_iterations=als_iterations)
    started = time.perf_counter()
    als(ctx, np.arange(min(1000, ds.n_accounts)), 10, als_cfg)
    als_seconds = round((time.perf_counter() - started) / als_iterations, 2)
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return [row | {"als_seconds_per_iteration": als_seconds, "peak_rss_gb": peak} for row in rows]


def main() -> None:
    """Run each dataset in a child process; print the table and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument(
        "--datasets", default="twitch,synthetic", help="comma list of: twitch, synthetic"
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps to time")
    parser.add_argument(
        "--accounts",
        type=int,
        default=1_000_000,
        help="synthetic graph size (mean 25 follows drawn per account)",
    )
    parser.add_argument("--als-iterations", type=int, default=3)
    parser.add_argument(
        "--variants",
        default="",
        help="semicolon-separated train.* settings to time one after another on the same "
        "data, e.g. 'sparse_ids=never;precision=bf16' (default: the defaults alone)",
    )
    parser.add_argument(CHILD, help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = args.variants.split(";")
    if args.child:
        print(
            json.dumps(
                measure(args.child, args.steps, args.accounts, args.als_iterations, variants)
            )
        )
        return
    rows = []
    for dataset in args.datasets.split(","):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--json",
                args.json,
                "--steps",
                str(args.steps),
                "--accounts",
                str(args.accounts),
                "--als-iterations",
                str(args.als_iterations),
                "--variants",
                args.variants,
                CHILD,
                dataset,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            sys.exit(f"{dataset} failed:\n{proc.stderr[-3000:]}")
        rows.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
    columns = [
        "dataset",
        "variant",
        "accounts",
        "train_follows",
        "examples_per_second",
        "epoch_seconds_estimate",
        "als_seconds_per_iteration",
        "peak_rss_gb",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for row in rows:
        print(
            "| "
            + " | ".join(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in columns)
            + " |"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
