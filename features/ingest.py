"""The ingest step: any supported source -> the raw contract tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from followrec.core.config import Config
from followrec.core.errors import InputError
from followrec.features.contract import Dataset, read_dataset, write_dataset
from followrec.features.loaders import load_edgelist, load_twitch
from followrec.features.split import Split, split_dataset
from followrec.features.synthetic import generate
from followrec.features.transforms import FeatureTables, build_features

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


def training_features(ds: Dataset, split: Split, cfg: Config) -> FeatureTables:
    """Both towers' feature tables, built from the split's training follows only."""
    return build_features(
        ds.accounts, split.train, split.train_engagements, cfg.features, ds.feature_kinds
    )


def load_split_features(cfg: Config, progress: bool = True) -> tuple[Dataset, Split, FeatureTables]:
    """Load the configured dataset, split it, and build its training feature tables."""
    ds = load_dataset(cfg, progress=progress)
    split = split_dataset(ds, cfg.split)
    return ds, split, training_features(ds, split, cfg)


def run(cfg: Config, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Write the contract tables under out_dir; returns their location and counts."""
    ds = load_dataset(cfg, progress=progress)
    path = write_dataset(ds, out_dir)
    return {"dataset_uri": str(Path(path).resolve()), "counts": ds.counts()}
