"""Training steps with a step's id bags pooled per id table (`TwoTower.pool_bags`, the
default) against bag by bag, in one process on the Twitch union: the two alternate in
blocks of steps, so that the machine's drift from one minute to the next hits both.

    .venv/bin/python benchmarks/pooling_ab.py --json runs/bench/pooling_ab.json

(10 blocks of 100 steps per variant by default.)

Prints ms per step (median over blocks) and the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# This folder holds a `training.py` named like the `training` package; keep it off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def measure(blocks: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each block, per variant."""
    import torch

    import followrec.training.train as train
    from followrec.core.config import load_config
    from followrec.features.ingest import load_dataset
    from followrec.features.spec import load_spec
    from followrec.features.split import split_dataset
    from followrec.features.transforms import build_features

    cfg = load_config(None, [])
    tc = cfg.train
    ds = load_dataset(cfg, progress=False)
    split = split_dataset(ds, cfg.split)
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    tables = build_features(
        ds.accounts, split.train, split.train_engagements, cfg.features, ds.feature_kinds
    )
    trained = train.new_model(tables, load_spec(tc.spec), tc, ds.n_accounts)
    data = train.fit_data(split.train, split.train.head(1000), ds.n_accounts, tc)
    model, optimizer = trained.model, train.Optimizer(trained.model, tc)
    consumer_t, producer_t = trained.tensors(tables)
    gen = torch.Generator().manual_seed(tc.seed)
    per_epoch = len(data.users) // tc.batch_size
    perm = torch.randperm(len(data.users), generator=gen)
    pooled = model.pool_bags

    def bag_by_bag(groups, tables=None):  # towers then pool each bag themselves
        return [{} for _ in groups]

    variants = {"pooled": pooled, "bag_by_bag": bag_by_bag}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    step = 0
    for block in range(blocks):
        for name in list(variants)[:: 1 if block % 2 == 0 else -1]:
            model.pool_bags = variants[name]
            started = time.perf_counter()
            for _ in range(steps):
                lo = (step % per_epoch) * tc.batch_size
                idx = perm[lo : lo + tc.batch_size]
                step += 1
                loss = train._step_loss(
                    model,
                    consumer_t,
                    producer_t,
                    data.users[idx],
                    data.items[idx],
                    data.follows,
                    data.log_q,
                    data.neg_p,
                    tc,
                    gen,
                    None,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step(None)
            seconds[name].append((time.perf_counter() - started) / steps)
    return seconds


def main() -> None:
    """Measure, print the table and write JSON."""
    import numpy as np

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--blocks", type=int, default=10, help="blocks per variant")
    parser.add_argument("--steps", type=int, default=100, help="training steps per block")
    args = parser.parse_args()
    seconds = measure(args.blocks, args.steps)
    ratios = np.array(seconds["bag_by_bag"]) / np.array(seconds["pooled"])
    result = {
        "blocks": args.blocks,
        "steps_per_block": args.steps,
        "ms_per_step_median": {k: round(1000 * float(np.median(v)), 2) for k, v in seconds.items()},
        "speedup_median_of_pairs": round(float(np.median(ratios)), 3),
        "seconds_per_step": seconds,
    }
    print("| variant | ms/step (median of blocks) |\n|---|---|")
    for name, ms in result["ms_per_step_median"].items():
        print(f"| {name} | {ms} |")
    print(f"pooled is {result['speedup_median_of_pairs']}x bag by bag (median of block pairs)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
