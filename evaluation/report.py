"""report.json, report.md, the recall@K plot, the printed table, and MLflow logging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from followrec.core.atomic import atomic_write
from followrec.evaluation.plots import recall_plot

HEADLINE = (
    "recall@10",
    "recall@50",
    "recall@100",
    "recall@200",
    "map@100",
    "ndcg@100",
    "precision@100",
    "hit_rate@100",
    "coverage@100",
    "popularity_percentile@100",
)


def table(report: dict[str, Any], columns: tuple[str, ...] = HEADLINE) -> str:
    """Markdown table: one row per source."""
    head = "| source | " + " | ".join(columns) + " | seconds |"
    rule = "|---" * (len(columns) + 2) + "|"
    rows = [head, rule]
    for name, metrics in report["sources"].items():
        cells = [f"{metrics.get(c, float('nan')):.4f}" for c in columns]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {metrics.get('seconds', 0):.1f} |")
    return "\n".join(rows)


def group_table(report: dict[str, Any], metric: str = "recall@100") -> str:
    """Markdown table of one metric per group (columns) and source (rows)."""
    groups: list[str] = []
    for metrics in report["sources"].values():
        groups += [g for g in metrics.get("groups", {}) if g not in groups]
    rows = ["| source | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for name, metrics in report["sources"].items():
        cells = [
            f"{metrics['groups'][g][metric]:.4f}" if g in metrics.get("groups", {}) else "-"
            for g in groups
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    first = next(iter(report["sources"].values()), {})
    counts = [str(first.get("groups", {}).get(g, {}).get("users", "-")) for g in groups]
    rows.append("| users | " + " | ".join(counts) + " |")
    return "\n".join(rows)


def markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    ds, split = report["dataset"], report["split"]
    lines = [
        f"# followrec offline evaluation: {ds['name']}",
        "",
        f"{ds['accounts']:,} accounts, {ds['follows']:,} follows; split `{split['kind']}`: "
        f"{split['train_follows']:,} training / {split['holdout_follows']:,} holdout follows, "
        f"{split['evaluated_users']:,} users evaluated "
        f"({split['cold_start_eval_users']:,} cold-start).",
        "",
        "## All users",
        "",
        table(report),
        "",
        "## Recall@100 by group",
        "",
        group_table(report),
        "",
        "## MAP@100 by group",
        "",
        group_table(report, "map@100"),
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and recall_at_k.png under out_dir."""
    paths = {
        "json": out_dir / "report.json",
        "md": out_dir / "report.md",
        "plot": out_dir / "recall_at_k.png",
    }
    atomic_write(paths["json"], json.dumps(report, indent=2, sort_keys=False, default=str))
    atomic_write(paths["md"], markdown(report))
    recall_plot(report, paths["plot"])
    return paths
