"""New accounts without retraining (case study Q7: refresh producer embeddings between
trainings). A share of the accounts (default 10%) is held out of training entirely, with every
follow they take part in; the default two-tower model is trained on the rest. Then the index
is refreshed (`indexing.refresh.refresh_version`, the followrec_index_refresh path) on a
snapshot that has the new accounts: their attributes, the follows among them, and a revealed
share of their follows with the old accounts (the followers they gained since the training,
both directions on a mutual graph). Scored: Recall@100 on the hidden follows of old users
INTO new accounts, each source ranking the whole catalog minus what the user follows in the
snapshot, against popularity_segment and friends_of_friends run on the same snapshot.

    .venv/bin/python benchmarks/new_accounts.py --json runs/bench/new_accounts.json
    .venv/bin/python benchmarks/new_accounts.py --languages PTBR --reveal 0,0.2,0.5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# This folder holds files named like project packages; keep it off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

K = 100
BASELINES = ("popularity_segment", "friends_of_friends")


def renumber(ds, new_share: float, seed: int):  # noqa: ANN001, ANN201 - a Dataset
    """The dataset with a random `new_share` of its accounts moved to the highest ids."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    n = ds.n_accounts
    new = np.sort(rng.choice(n, size=max(1, round(new_share * n)), replace=False))
    old = np.setdiff1d(np.arange(n), new)
    position = np.empty(n, dtype=np.int64)
    position[np.concatenate([old, new])] = np.arange(n)
    accounts = ds.accounts.iloc[np.concatenate([old, new])].reset_index(drop=True)
    accounts["account_id"] = np.arange(n)
    follows = ds.follows.assign(
        follower_id=position[ds.follows["follower_id"].to_numpy()],
        followee_id=position[ds.follows["followee_id"].to_numpy()],
    )
    return replace(ds, accounts=accounts, follows=follows), len(old)


def world_split(follows: pd.DataFrame, n_old: int, reveal: float, seed: int):  # noqa: ANN201
    """(old-old follows, new-new follows, revealed old<->new follows, hidden old->new follows).
    A pair is revealed or hidden in both directions, so a mutual edge cannot leak."""
    a = follows["follower_id"].to_numpy()
    b = follows["followee_id"].to_numpy()
    old_a, old_b = a < n_old, b < n_old
    mixed = old_a != old_b
    pair = np.minimum(a, b).astype(np.int64) * (1 << 32) + np.maximum(a, b)
    pairs = np.unique(pair[mixed])
    rng = np.random.default_rng(seed + 1)
    shown = pairs[rng.random(len(pairs)) < reveal]
    revealed = mixed & np.isin(pair, shown)
    hidden = mixed & ~revealed & old_a  # an old user following a new account
    return follows[old_a & old_b], follows[~old_a & ~old_b], follows[revealed], follows[hidden]


def model_lists(trained, tables, users: np.ndarray, seen: pd.DataFrame, workdir: Path):  # noqa: ANN001, ANN201
    """Refresh the index with the new snapshot and serve each user from it."""
    from followrec.core.config import IndexConfig
    from followrec.indexing.refresh import refresh_version
    from followrec.indexing.store import load_version
    from followrec.training.model_io import save_model_dir
    from followrec.training.train import encode

    model_dir = save_model_dir(trained, workdir / "model")
    built = refresh_version(workdir / "indexes", "1", model_dir, tables, IndexConfig())
    index, account_ids, _ = load_version(workdir / "indexes", built["index_version"])
    consumer_t, _ = trained.tensors(tables)
    import torch

    with torch.no_grad():
        queries = encode(trained.model.consumer, consumer_t, users).numpy().astype(np.float32)
    known = seen.groupby("follower_id")["followee_id"].apply(set).to_dict()
    depth = K + int(max((len(v) for v in known.values()), default=0)) + 1
    _, found = index.search(queries, min(depth, index.ntotal))
    out = np.full((len(users), K), -1, dtype=np.int64)
    for row, user in enumerate(users):
        skip = known.get(int(user), set()) | {int(user)}
        picks = [int(a) for a in account_ids[found[row][found[row] >= 0]] if int(a) not in skip]
        out[row, : min(K, len(picks))] = picks[:K]
    return out, built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", default="DE,ENGB,ES,FR,PTBR,RU",
                        help="Twitch graphs to load together (default: the union)")  # fmt: skip
    parser.add_argument("--new-share", type=float, default=0.1, help="accounts held out (0.1)")
    parser.add_argument("--reveal", default="0,0.2",
                        help="shares of the new accounts' follows visible at refresh")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for training (e.g. train.epochs=2)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    from dataclasses import replace

    from followrec.core.config import load_config
    from followrec.core.metrics import mean_recall
    from followrec.evaluation import baselines
    from followrec.evaluation.evaluate import segments
    from followrec.features.ingest import load_dataset
    from followrec.features.split import split_dataset
    from followrec.features.transforms import build_features
    from followrec.training.train import train_two_tower

    cfg = load_config(None, [f"data.twitch_languages=[{args.languages}]", *args.set])
    ds, n_old = renumber(load_dataset(cfg, progress=False), args.new_share, args.seed)
    n = ds.n_accounts
    old_old, new_new, _, _ = world_split(ds.follows, n_old, 0.0, args.seed)
    old_ds = replace(ds, accounts=ds.accounts.iloc[:n_old].reset_index(drop=True),
                     follows=old_old.reset_index(drop=True))  # fmt: skip
    split = split_dataset(old_ds, cfg.split)
    started = time.perf_counter()
    trained = train_two_tower(old_ds, split, cfg, progress=False)
    train_seconds = time.perf_counter() - started
    segment = segments(ds)
    results = {
        "dataset": ds.name,
        "accounts": n,
        "new_accounts": n - n_old,
        "train_seconds": round(train_seconds, 1),
        "model_accounts": trained.n_ids["accounts"],
        "reveal": {},
    }
    for reveal in (float(r) for r in args.reveal.split(",")):
        _, _, revealed, hidden = world_split(ds.follows, n_old, reveal, args.seed)
        snapshot = pd.concat([split.train, new_new, revealed], ignore_index=True)
        tables = build_features(ds.accounts, snapshot, None, cfg.features, ds.feature_kinds)
        users = np.sort(hidden["follower_id"].unique())
        with tempfile.TemporaryDirectory() as tmp:
            lists, built = model_lists(trained, tables, users, snapshot, Path(tmp))
        ctx = baselines.GraphContext.from_train(snapshot, n, segment, progress=False)
        scored = {"two_tower": lists}
        for name in BASELINES:
            scored[name] = getattr(baselines, name)(ctx, users, K, cfg.baselines)
        row = {
            name: round(mean_recall(recs, users, hidden, n, K), 4) for name, recs in scored.items()
        }
        row["users"] = len(users)
        row["hidden_follows"] = len(hidden)
        row["indexed"] = built["count"]
        best = max(row[b] for b in BASELINES)
        row["ratio_vs_best_baseline"] = round(row["two_tower"] / best, 3) if best else None
        results["reveal"][str(reveal)] = row
    print(f"{ds.name}: {n - n_old} of {n} accounts new; training {train_seconds:.0f} s")
    header = " ".join(f"{b:>19}" for b in BASELINES)
    print(f"{'revealed':>9} {'users':>6} {'two_tower':>10} {header}")
    for reveal, row in results["reveal"].items():
        print(f"{reveal:>9} {row['users']:>6} {row['two_tower']:>10.4f} "
              + " ".join(f"{row[b]:>19.4f}" for b in BASELINES))  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
