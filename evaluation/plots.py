"""Plots people would rather look at than read; logged to MLflow beside the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from followrec.core.atomic import atomic_file


def save_figure(fig: Any, path: Path) -> Path:
    """Write a figure as PNG in one rename and close it."""
    import matplotlib.pyplot as plt

    with atomic_file(path) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


def recall_plot(report: dict[str, Any], path: Path) -> Path:
    """Recall@K against K, one line per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = report["ks"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, metrics in report["sources"].items():
        ax.plot(ks, [metrics[f"recall@{k}"] for k in ks], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title(f"Recall@K on {report['dataset']['name']} (holdout follows)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def training_plot(history: list[dict[str, float]], title: str, path: Path) -> Path:
    """Training loss and validation Recall@100 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(epochs, [h["loss"] for h in history], marker="o", color="tab:blue")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    other = ax.twinx()
    other.plot(epochs, [h["val_recall_at_100"] for h in history], marker="s", color="tab:red")
    other.set_ylabel("validation Recall@100", color="tab:red")
    ax.set_title(f"{title}: loss and validation recall")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
