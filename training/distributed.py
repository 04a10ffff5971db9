"""Two-tower training across processes and hosts: DistributedDataParallel over gloo (CPU).

Run under torchrun; every rank loads the same data, reads its slice of each global batch,
and DDP averages the gradients, so all ranks hold the same weights after every step. Rank 0
writes the model folder (the same format `followrec evaluate` and the index build read) and
result.json.

    # one machine, 2 processes, on a pipeline run's validated tables:
    torchrun --standalone --nproc-per-node 2 -m followrec.training.distributed \\
        runs/pipeline runs/ddp
    # two hosts (run on each, NODE_RANK 0 and 1):
    torchrun --nnodes 2 --node-rank $NODE_RANK --nproc-per-node 8 \\
        --rdzv-backend c10d --rdzv-endpoint head:29500 -m followrec.training.distributed \\
        /shared/runs/pipeline /shared/runs/ddp

The global batch is nproc x train.batch_size; keep it equal to a single-process run's
batch size to compare them (e.g. --set train.batch_size=512 with 2 processes against 1024).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist


def parameter_digest(model: torch.nn.Module) -> str:
    """A hash of every weight: equal on all ranks when DDP kept them in step."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", help="a pipeline run folder (its RUN/raw tables and config)")
    parser.add_argument("out", help="where rank 0 writes model/ and result.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from followrec.core.config import load_config
    from followrec.core.layout import Layout
    from followrec.features.contract import read_dataset
    from followrec.features.split import split_dataset
    from followrec.training.model_io import save_model_dir
    from followrec.training.train import train_two_tower

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    world = dist.get_world_size() if distributed else 1
    rank = dist.get_rank() if distributed else 0
    run = Path(args.run)
    config = run / "config.yaml"
    cfg = load_config(config if config.exists() else None, args.set)
    # Each process gets its share of the cores.
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, threads=max(1, cfg.train.threads // world))
    )
    ds = read_dataset(Layout(run).raw)
    split = split_dataset(ds, cfg.split)
    started = time.perf_counter()
    trained = train_two_tower(ds, split, cfg, progress=rank == 0)
    seconds = time.perf_counter() - started
    digests = [None] * world
    local = parameter_digest(trained.model)
    if distributed:
        dist.all_gather_object(digests, local)
    else:
        digests = [local]
    if rank == 0:
        out = Path(args.out)
        save_model_dir(trained, out / "model")
        result = {
            "world_size": world,
            "global_batch": cfg.train.batch_size * world,
            "history": trained.history,
            "best_val_recall_at_100": max(h["val_recall_at_100"] for h in trained.history),
            "seconds": round(seconds, 2),
            "examples_per_second": round(trained.examples_per_second, 1),
            "parameter_digests": digests,
        }
        (out / "result.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
