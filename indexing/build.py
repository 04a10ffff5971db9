"""The index build step: encode every producer with a trained model, build the index the
factory picks, measure its ANN Recall@100 against exact search, write a versioned folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from followrec.features.transforms import FeatureTables
from followrec.indexing.factory import build_tuned
from followrec.indexing.store import read_manifest, write_version
from followrec.training.model_io import load_model_dir
from followrec.training.train import encode


def build_index_version(
    model_dir: str | Path,
    model_version: str,
    tables: FeatureTables,
    root: str | Path,
    version: str,
    target_recall: float = 0.95,
    kind: str = "auto",
    sample_users: int = 2000,
    seed: int = 0,
    threads: int = 2,
) -> dict[str, Any]:
    """Write root/<version> for `model_version`, whose weights are in model_dir; returns
    the manifest (which names the model version, not the folder)."""
    started = time.perf_counter()
    faiss.omp_set_num_threads(threads)
    trained = load_model_dir(model_dir)
    consumer_t, producer_t = trained.tensors(tables)
    with torch.no_grad():
        items = encode(trained.model.producer, producer_t).numpy().astype(np.float32)
        rng = np.random.default_rng(seed)
        users = np.sort(
            rng.choice(
                len(tables.consumer), size=min(sample_users, len(tables.consumer)), replace=False
            )
        )
        queries = encode(trained.model.consumer, consumer_t, users).numpy().astype(np.float32)
    index, choice, recall = build_tuned(items, queries, target_recall, k=100, kind=kind)
    manifest = {
        "model_version": str(model_version),
        "schema_hash": trained.schema["hash"],
        "kind": choice.kind,
        "params": choice.params,
        "ann_recall_at_100": round(float(recall), 4),
        "target_recall": target_recall,
        "sample_users": int(len(users)),
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    account_ids = tables.producer["account_id"].to_numpy()
    write_version(root, version, index, account_ids, manifest)
    return read_manifest(root, version)
