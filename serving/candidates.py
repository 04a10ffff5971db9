"""The inference path for one run: the `champion` from the MLflow registry, its published
FAISS index, and users' online features from Feast (the definitions training used)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from feature_repo import definitions
from features import feature_store
from followrec.errors import InputError
from training.data import tower_tensors
from training.model_io import load_model_dir
from training.train import TrainedModel, encode


@dataclass
class Candidates:
    """Account ids with retrieval scores, and what produced them."""

    user_id: int
    account_ids: list[int]
    scores: list[float]
    model_version: str
    index_version: str
    seconds: dict[str, float]


class Recommender:
    """Loads the champion and its index once; answers many users."""

    def __init__(self, run_dir: str | Path, cfg: Any) -> None:
        from evaluation import promote
        from evaluation.registry import CHAMPION, alias_version
        from indexing.store import load_published

        self.run_dir = Path(run_dir)
        client = promote.client_for(cfg, self.run_dir)
        champion = alias_version(client, CHAMPION)
        if champion is None:
            raise InputError("no champion in the registry: run the training DAG first")
        self.index, self.account_ids, self.manifest = load_published(
            promote.index_root(cfg, self.run_dir)
        )
        self.model_version = str(champion.version)
        self.trained: TrainedModel = load_model_dir(self.manifest["model_dir"])
        if self.trained.schema["hash"] != self.manifest["schema_hash"]:
            raise InputError(
                "the published index was built by another model schema",
                field="schema_hash",
                value=self.manifest["schema_hash"],
            )
        layout_features = self.run_dir / "features"
        self.service = feature_store.read_manifest(layout_features)["services"]["consumer"]
        self.feast_dir = self.run_dir / "feast"

    def user_features(self, user_ids: list[int]) -> pd.DataFrame:
        """Online consumer features; unknown users come back with nulls (cold start)."""
        return feature_store.online_features(
            self.feast_dir, self.service, definitions.KEYS["consumer"], user_ids
        )

    def recommend(self, user_id: int, k: int = 100) -> Candidates:
        """Top k accounts for one user, excluding the user and whom they follow."""
        if k < 1 or k > 1000:
            raise InputError("k must be between 1 and 1000", field="k", value=k)
        started = time.perf_counter()
        frame = self.user_features([user_id])
        if frame.drop(columns=[definitions.KEYS["consumer"]]).isna().all(axis=None):
            raise InputError("unknown user: no online features", field="user_id", value=user_id)
        fetched = time.perf_counter()
        frame = _fill(frame, self.trained.schema["consumer"])
        tensors = tower_tensors(
            frame,
            self.trained.schema["consumer"],
            self.trained.dense_stats["consumer"],
            self.trained.train_config["max_history"],
        )
        with torch.no_grad():
            query = encode(self.trained.model.consumer, tensors).numpy().astype(np.float32)
        encoded = time.perf_counter()
        followed = (
            set(np.asarray(frame["follows"].iloc[0]).tolist()) if "follows" in frame else set()
        )
        depth = min(self.index.ntotal, k + len(followed) + 1)
        scores, rows = self.index.search(query, depth)
        searched = time.perf_counter()
        ids, kept = [], []
        for score, row in zip(scores[0], rows[0], strict=True):
            if row < 0:
                continue
            account = int(self.account_ids[row])
            if account == user_id or account in followed:
                continue
            ids.append(account)
            kept.append(float(score))
            if len(ids) == k:
                break
        return Candidates(
            user_id=user_id,
            account_ids=ids,
            scores=kept,
            model_version=self.model_version,
            index_version=self.manifest["version"],
            seconds={
                "features": round(fetched - started, 4),
                "tower": round(encoded - fetched, 4),
                "search": round(searched - encoded, 4),
            },
        )


def _fill(frame: pd.DataFrame, features: list[dict[str, Any]]) -> pd.DataFrame:
    """Online rows in the training dtypes: bags as int64 arrays, missing values as 0."""
    out = frame.copy()
    for feat in features:
        name = feat["name"]
        if feat["kind"] in ("id_bag", "vector"):
            dtype = np.int64 if feat["kind"] == "id_bag" else np.float32
            out[name] = [np.asarray(v if v is not None else [], dtype=dtype) for v in out[name]]
        else:
            out[name] = out[name].fillna(0)
            if feat["kind"] == "categorical":
                out[name] = out[name].astype(np.int64)
    return out
