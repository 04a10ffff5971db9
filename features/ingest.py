"""The ingest step: any supported source -> the raw contract tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.contract import Dataset, read_dataset, write_dataset
from features.loaders import load_edgelist, load_twitch
from features.synthetic import generate
from followrec.config import Config
from followrec.errors import InputError

DATASETS = ("twitch", "edgelist", "synthetic", "parquet")


def load_dataset(cfg: Config, progress: bool = True) -> Dataset:
    """Load the dataset the config names."""
    data = cfg.data
    if data.dataset == "twitch":
        return load_twitch(data.twitch_dir, data.twitch_languages)
    if data.dataset == "edgelist":
        if not data.edges:
            raise InputError("--edges FILE is required with --dataset edgelist", field="data.edges")
        return load_edgelist(data.edges, data.nodes, undirected=data.undirected, header=data.header)
    if data.dataset == "synthetic":
        return generate(cfg.synthetic, progress=progress)
    if data.dataset == "parquet":
        if not data.parquet_dir:
            raise InputError(
                "--path DIR is required with --dataset parquet", field="data.parquet_dir"
            )
        return read_dataset(data.parquet_dir)
    raise InputError(
        f"unknown dataset; expected one of {', '.join(DATASETS)}",
        field="data.dataset",
        value=data.dataset,
    )


def run(cfg: Config, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Write the contract tables under out_dir; returns their location and counts."""
    ds = load_dataset(cfg, progress=progress)
    path = write_dataset(ds, out_dir)
    return {"dataset_uri": str(Path(path).resolve()), "counts": ds.counts()}
