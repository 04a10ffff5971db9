"""Training steps of this checkout against a git revision's, paired in one training run:
the step code (functions and methods of the training modules) is swapped between the two
versions every block of steps, so that the machine's drift hits both alike.

    .venv/bin/python benchmarks/step_ab.py --base 402479d --json runs/bench/step_ab.json
    .venv/bin/python benchmarks/step_ab.py --base HEAD --dataset twitch --json out.json

The revision's versions of training/{data,id_rows,objectives,towers,train}.py are loaded
beside the current ones; constructors and checkpoint state stay current, so the two must
agree on state layout. Prints ms per step (mean and median after a warm-up, steps over 10x
the median, i.e. epoch boundaries with their validation, left out) and the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

# This folder holds a `training.py` named like the `training` package; keep it off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

MODULES = ("data", "id_rows", "objectives", "towers", "train")
# Current in both: constructors and checkpoint state (one layout), the loop that drives the
# steps (it runs once per epoch, so a swap would not reach it) and the timed optimizer step.
KEEP = {"__init__", "state_dict", "load_state_dict", "train_two_tower", "_fit", "_epoch"}


def revision_module(rev: str, name: str, folder: Path) -> ModuleType:
    """training/<name>.py as it was at `rev`, imported under a private name."""
    source = subprocess.run(
        ["git", "show", f"{rev}:training/{name}.py"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = folder / f"base_{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"followrec_base_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def swaps(current: dict[str, ModuleType], base: dict[str, ModuleType]) -> list[tuple]:
    """(owner, attribute, current value, base value) for every function and method that
    both versions define; a function imported by name into another module is swapped there
    too. The base's classes are replaced by the current ones (isinstance checks)."""
    out = []
    for name, module in current.items():
        old = base[name]
        for attr, value in vars(module).items():
            if inspect.isclass(value) and value.__module__ == module.__name__:
                setattr(old, attr, value)
    for name, module in current.items():
        old = base[name]
        for attr, value in vars(module).items():
            if getattr(value, "__module__", None) != module.__name__ or not hasattr(old, attr):
                continue
            if attr in KEEP:
                continue
            if inspect.isfunction(value):
                for owner in current.values():
                    if getattr(owner, attr, None) is value:
                        out.append((owner, attr, value, getattr(old, attr)))
            elif inspect.isclass(value):
                for method, fn in vars(getattr(old, f"_base_{attr}", object)).items():
                    if value.__name__ == "Optimizer" and method == "step":
                        continue
                    if inspect.isfunction(fn) and method not in KEEP and method in vars(value):
                        out.append((value, method, vars(value)[method], fn))
    return out


def measure(rev: str, dataset: str, accounts: int, steps: int, block: int, warmup: int) -> dict:
    """Per-step seconds of each version after `warmup` steps (the first of a block left out)."""
    import numpy as np

    import followrec.training as package
    from followrec.core.config import load_config
    from followrec.features.ingest import load_dataset
    from followrec.features.split import split_dataset

    current = {n: importlib.import_module(f"{package.__name__}.{n}") for n in MODULES}
    with tempfile.TemporaryDirectory() as folder:
        base = {}
        for n in MODULES:
            base[n] = revision_module(rev, n, Path(folder))
            # Keep the base classes reachable before they are replaced by current ones.
            for attr, value in list(vars(base[n]).items()):
                if inspect.isclass(value) and value.__module__ == base[n].__name__:
                    setattr(base[n], f"_base_{attr}", value)
        pairs = swaps(current, base)
    train = current["train"]
    cfg = load_config(
        None,
        [
            f"train.max_steps={steps}",
            "train.epochs=100",  # max_steps ends the run
            "train.validation_users=200",
            f"data.dataset={dataset}",
            f"synthetic.n_accounts={accounts}",
            "synthetic.mean_follows=23",
        ],
    )
    ds = load_dataset(cfg, progress=False)
    split = split_dataset(ds, cfg.split)
    stamps: list[float] = []
    labels: list[str] = []
    active = {"version": "base"}

    def use(version: str) -> None:
        active["version"] = version
        for owner, attr, now, then in pairs:
            setattr(owner, attr, then if version == "base" else now)

    step = train.Optimizer.step

    def timed_step(self, touched=None) -> None:  # noqa: ANN001 - the optimizer's signature
        step(self, touched)
        stamps.append(time.perf_counter())
        labels.append(active["version"])
        if len(stamps) % block == 0:
            use("current" if active["version"] == "base" else "base")

    use("base")
    train.Optimizer.step = timed_step
    try:
        train.train_two_tower(ds, split, cfg, progress=False)
    finally:
        train.Optimizer.step = step
        use("current")
    seconds = np.diff(stamps)
    version = np.array(labels[1:])
    index = np.arange(1, len(stamps))
    keep = (index > warmup) & (index % block != 0)  # a block's first step follows the swap
    # An epoch's first step also holds the last epoch's validation: leave such outliers out.
    keep &= seconds < 10 * np.median(seconds)
    result = {
        "dataset": ds.name,
        "accounts": ds.n_accounts,
        "base": rev,
        "swapped": len(pairs),
        "block": block,
    }
    for name in ("base", "current"):
        chosen = seconds[keep & (version == name)]
        result[name] = {
            "steps": int(len(chosen)),
            "ms_per_step_mean": round(float(chosen.mean()) * 1e3, 2),
            "ms_per_step_median": round(float(np.median(chosen)) * 1e3, 2),
        }
    result["speedup_mean"] = round(
        result["base"]["ms_per_step_mean"] / result["current"]["ms_per_step_mean"], 3
    )
    return result


def main() -> None:
    """Parse, measure, print the table, write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="git revision whose step code is the base")
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--dataset", default="synthetic", help="synthetic or twitch")
    parser.add_argument("--accounts", type=int, default=1_000_000, help="synthetic accounts")
    parser.add_argument("--steps", type=int, default=3000, help="training steps in all")
    parser.add_argument("--block", type=int, default=100, help="steps before each swap")
    parser.add_argument("--warmup", type=int, default=500, help="first steps left out")
    args = parser.parse_args()
    if args.steps <= args.warmup + 2 * args.block:
        parser.error("--steps must exceed --warmup plus two blocks")
    result = measure(args.base, args.dataset, args.accounts, args.steps, args.block, args.warmup)
    print(
        f"| version | steps timed | ms/step mean | ms/step median |  ({result['swapped']} swapped)"
    )
    print("|---|---|---|---|")
    for name in ("base", "current"):
        row = result[name]
        label = f"{args.base} (base)" if name == "base" else "this checkout"
        print(
            f"| {label} | {row['steps']} | {row['ms_per_step_mean']} | "
            f"{row['ms_per_step_median']} |"
        )
    print(f"speedup (mean): {result['speedup_mean']}x")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
