"""Model quality per graph kind: the default two-tower model beside every candidate source
(popularity, friends-of-friends, co-follow CF, ALS, LightGCN, the blend) on each Twitch
language graph alone, on their union, and on synthetic graphs with high and low triangle
closure. Default settings everywhere: nothing is tuned per graph.

Prints Recall@100 / MAP@100 per graph with the two-tower's ratio to the best other source,
and writes JSON: {"graphs": {"<graph>": {"sources": {"<source>": {"recall@100", "map@100",
"cold_start_recall@100", ...}}, "ratios": {...}}}}.

    .venv/bin/python benchmarks/quality.py --json runs/bench/quality.json
    .venv/bin/python benchmarks/quality.py --graphs twitch_PTBR,twitch_ENGB --json out.json
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

LANGUAGES = ("DE", "ENGB", "ES", "FR", "PTBR", "RU")
SYNTHETIC = {
    # triadic_share: the share of follows the generator makes by closing a triangle.
    "synthetic_high_transitivity": 0.6,
    "synthetic_low_transitivity": 0.05,
}
GRAPHS = ("twitch", *(f"twitch_{lang}" for lang in LANGUAGES), *SYNTHETIC)
METRICS = ("recall@100", "map@100")
MODEL = "two_tower"
SOURCES = "popularity,popularity_segment,friends_of_friends,cofollow_cf,als,lightgcn,blend"


def graph_overrides(graph: str, synthetic_accounts: int) -> list[str]:
    """Config overrides that select one graph."""
    if graph == "twitch":
        return ["data.dataset=twitch"]
    if graph.startswith("twitch_"):
        return ["data.dataset=twitch", f"data.twitch_languages={graph.removeprefix('twitch_')}"]
    if graph in SYNTHETIC:
        return [
            "data.dataset=synthetic",
            f"synthetic.n_accounts={synthetic_accounts}",
            f"synthetic.triadic_share={SYNTHETIC[graph]}",
        ]
    raise SystemExit(f"unknown graph {graph!r}; known: {', '.join(GRAPHS)}")


def evaluate_graph(graph: str, synthetic_accounts: int, extra: list[str]) -> dict:
    """Train the default model and run every source on one graph; its metrics per source."""
    from followrec.core.config import load_config
    from followrec.evaluation import evaluate

    overrides = [
        *graph_overrides(graph, synthetic_accounts),
        f"eval.two_tower={MODEL}",
        f"baselines.sources={SOURCES}",
        "mlflow.enabled=false",
        *extra,
    ]
    cfg = load_config(None, overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"quality-{graph}-") as out:
        evaluate.run(cfg, out, progress=False)
        report = json.loads((Path(out) / "report.json").read_text())
    sources = {}
    for name, values in report["sources"].items():
        row = {m: round(values[m], 4) for m in (*METRICS, "coverage@100")}
        cold = values.get("groups", {}).get("cold_start=true")
        row["cold_start_recall@100"] = None if cold is None else round(cold["recall@100"], 4)
        row["seconds"] = round(values.get("seconds", 0.0), 1)
        sources[name] = row
    return {
        "accounts": report["dataset"]["accounts"],
        "follows": report["dataset"]["follows"],
        "eval_users": report["split"]["evaluated_users"],
        "sources": sources,
        "ratios": ratios(sources),
        "training_epochs": len(report["training"][MODEL]["history"]),
        "seconds": round(time.perf_counter() - started, 1),
    }


def ratios(sources: dict) -> dict:
    """Per metric: the two-tower's value over the best other source's, and that source."""
    out = {}
    for metric in (*METRICS, "cold_start_recall@100"):
        others = {s: v[metric] for s, v in sources.items() if s != MODEL and v[metric] is not None}
        if metric == "cold_start_recall@100":  # the acceptance compares with this one
            others = {s: v for s, v in others.items() if s == "popularity_segment"}
        if not others or sources[MODEL][metric] is None:
            continue
        best = max(others, key=others.get)
        out[metric] = {
            "ratio": round(sources[MODEL][metric] / max(others[best], 1e-12), 3),
            "best_other": best,
        }
    return out


def print_table(graphs: dict) -> None:
    """One row per graph: the model's figures and its ratio to the best other source."""
    header = (
        f"{'graph':30s} {'accounts':>8s} {'R@100':>7s} {'ratio':>6s} {'best other':>18s}"
        f" {'MAP@100':>8s} {'ratio':>6s} {'best other':>18s} {'cold R':>7s} {'vs seg':>6s}"
    )
    print(header)
    print("-" * len(header))
    for name, g in graphs.items():
        model, r = g["sources"][MODEL], g["ratios"]
        cold = r.get("cold_start_recall@100", {})
        print(
            f"{name:30s} {g['accounts']:8d} {model['recall@100']:7.4f}"
            f" {r['recall@100']['ratio']:6.3f} {r['recall@100']['best_other']:>18s}"
            f" {model['map@100']:8.4f} {r['map@100']['ratio']:6.3f}"
            f" {r['map@100']['best_other']:>18s}"
            f" {model['cold_start_recall@100'] or 0:7.4f} {cold.get('ratio', float('nan')):6.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument(
        "--graphs", default=",".join(GRAPHS), help=f"comma-separated subset of {','.join(GRAPHS)}"
    )
    parser.add_argument(
        "--synthetic-accounts", type=int, default=10_000, help="size of the synthetic graphs"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    args = parser.parse_args(argv)
    graphs = {}
    for graph in [g.strip() for g in args.graphs.split(",") if g.strip()]:
        print(f"{graph}: evaluating ...", file=sys.stderr, flush=True)
        graphs[graph] = evaluate_graph(graph, args.synthetic_accounts, args.set)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"graphs": graphs, "overrides": args.set}, indent=2))
    print_table(graphs)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
