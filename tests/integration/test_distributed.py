"""Training under torchrun: two DDP processes (gloo, CPU) keep identical weights and reach
the single-process result within tolerance, at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from followrec.core.config import load_config
from followrec.features.contract import write_dataset
from followrec.features.ingest import load_dataset

pytestmark = pytest.mark.slow
SETTINGS = ["--set", "train.epochs=1", "--set", "train.validation_users=500"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, twitch_dir) -> Path:
    run = tmp_path_factory.mktemp("ddp") / "run"
    cfg = load_config(None, [f"data.twitch_dir={twitch_dir}", "data.twitch_languages=[PTBR]"])
    write_dataset(load_dataset(cfg, progress=False), run / "raw")
    return run


def train(run: Path, out: Path, processes: int, batch: int) -> dict:
    bin_dir = Path(sys.executable).parent
    launcher = (
        [str(bin_dir / "torchrun"), "--standalone", f"--nproc-per-node={processes}"]
        if processes > 1
        else [sys.executable]
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    proc = subprocess.run(
        [*launcher, "-m", "training.distributed", str(run), str(out), *SETTINGS,
         "--set", f"train.batch_size={batch}"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_ddp_processes_match_one_process(run_dir, tmp_path):
    single = train(run_dir, tmp_path / "single", 1, 1024)
    ddp = train(run_dir, tmp_path / "ddp", 2, 512)
    assert ddp["world_size"] == 2 and ddp["global_batch"] == single["global_batch"] == 1024
    assert len(set(ddp["parameter_digests"])) == 1  # every rank holds the same weights
    assert single["best_val_recall_at_100"] > 0.3
    assert abs(ddp["best_val_recall_at_100"] - single["best_val_recall_at_100"]) < 0.02
    assert (tmp_path / "ddp" / "model" / "model.json").exists()
