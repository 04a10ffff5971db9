"""Plots people would rather look at than read; logged to MLflow beside the numbers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as tmp:
        fig.savefig(tmp.name, dpi=110)
    plt.close(fig)
    os.replace(tmp.name, path)
    return path


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
    return _save(fig, path)
