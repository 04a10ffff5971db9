"""Time and peak memory of every pipeline stage at scale: the DAG tasks' own functions, each
in its own process (as Airflow's LocalExecutor runs tasks), in DAG order.

    .venv/bin/python benchmarks/pipeline.py --scale 1m --json runs/bench/pipeline-1m.json
    .venv/bin/python benchmarks/pipeline.py --scale twitch --json runs/bench/pipeline-twitch.json
    .venv/bin/python benchmarks/pipeline.py --scale 100k --json runs/bench/pipeline-100k.json

--scale 1m: the synthetic generator at 1,000,000 accounts and ~20M follows, one training
epoch, the two-tower variant only, popularity as the one baseline, 5,000 evaluated users.
--scale twitch: the six Twitch graphs with the default settings (what `make run` does).
--scale 100k: the 1m settings at 100,000 accounts.
Stages: ingest (for 1m: generate), validate_raw, build_features, validate_features,
feast_apply, materialize, training_set, train (includes producer encoding for validation),
evaluate, gate, build_index (producer encoding + index build + ANN recall tuning),
validate_index, promote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Keep benchmarks/ off the import path (its scripts are named like the packages).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from followrec.step_names import FEATURES_STEPS, TRAINING_STEPS  # noqa: E402

STAGES = FEATURES_STEPS + TRAINING_STEPS  # the two DAGs' tasks, in order
SCALES = {
    "1m": [
        "data.dataset=synthetic",
        "synthetic.n_accounts=1000000",
        "synthetic.mean_follows=23",
        "train.epochs=1",
        "eval.two_tower=[two_tower]",
        "baselines.sources=[popularity]",
        "eval.max_users=5000",
    ],
    "twitch": ["data.dataset=twitch"],
}
# The same settings at a tenth of the accounts: the second point for docs/scaling.md.
SCALES["100k"] = [
    "synthetic.n_accounts=100000" if item.startswith("synthetic.n_accounts") else item
    for item in SCALES["1m"]
]


def run_stage(name: str, run: Path, settings: list[str], log: Path) -> dict:
    """One step in a child process: wall seconds and the child's own peak RSS."""
    args = [sys.executable, "-m", "followrec", "step", name, "--run", str(run), "--quiet"]
    for item in settings:
        args += ["--set", item]
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n===== {name}\n")
        out.flush()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    return {
        "stage": name,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),  # ru_maxrss is in KiB on Linux
        "exit_code": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--scale", choices=sorted(SCALES), default="1m")
    parser.add_argument("--run", help="run folder (default: runs/bench/pipeline-SCALE, emptied)")
    parser.add_argument("--set", action="append", default=[], help="extra KEY=VALUE settings")
    args = parser.parse_args()
    run = Path(args.run or f"runs/bench/pipeline-{args.scale}")
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    settings = SCALES[args.scale] + args.set
    log = run.parent / f"pipeline-{args.scale}.log"
    log.write_text("")
    rows = []
    started = time.perf_counter()
    for name in STAGES:
        row = run_stage(name, run, settings, log)
        rows.append(row)
        print(f"{name:18s} {row['seconds']:8.1f} s  {row['peak_rss_gb']:6.2f} GB", flush=True)
        if row["exit_code"] != 0:
            print(f"{name} failed (exit {row['exit_code']}); see {log}", file=sys.stderr)
            break
    total = time.perf_counter() - started
    report = json.loads((run / "report.json").read_text()) if (run / "report.json").exists() else {}
    result = {
        "scale": args.scale,
        "settings": settings,
        "stages": rows,
        "total_seconds": round(total, 1),
        "peak_rss_gb": max(r["peak_rss_gb"] for r in rows),
        "slowest": max(rows, key=lambda r: r["seconds"])["stage"],
        "dataset": report.get("dataset", {}).get("name"),
        "two_tower": {
            k: v
            for k, v in report.get("sources", {}).get("two_tower", {}).items()
            if k in ("recall@100", "map@100")
        },
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(
        f"\ntotal {result['total_seconds']} s; peak {result['peak_rss_gb']} GB; slowest stage "
        f"{result['slowest']}; wrote {args.json}"
    )


if __name__ == "__main__":
    main()
