"""Save and load a trained model as a state dict plus JSON (never pickled code)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from followrec.core.atomic import atomic_dir
from followrec.training.towers import TwoTower, TwoTowerEnsemble
from followrec.training.train import TrainedModel

STATE = "state_dict.pt"
META = "model.json"


def save_model_dir(trained: TrainedModel, path: str | Path) -> Path:
    """Write state_dict.pt and model.json (schema + hash, spec, vocabularies, statistics,
    training config, history); the folder appears complete or not at all."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        torch.save(trained.model.state_dict(), tmp / STATE)
        meta = {
            "schema": trained.schema,
            "schema_hash": trained.schema["hash"],
            "spec": trained.spec,
            "vocabularies": trained.vocabularies,
            "dense_stats": trained.dense_stats,
            "train_config": trained.train_config,
            "n_ids": trained.n_ids,
            "history": trained.history,
            "members": trained.members,  # towers per side (see TwoTowerEnsemble)
            "dimension": trained.dimension,  # width of the embeddings an index holds
        }
        (tmp / META).write_text(json.dumps(meta, indent=2))
    return path


def load_model_dir(path: str | Path) -> TrainedModel:
    """Rebuild the towers from model.json and load the weights (tensors only)."""
    path = Path(path)
    meta = json.loads((path / META).read_text())
    tc = meta["train_config"]
    members = [
        TwoTower(
            meta["schema"],
            meta["n_ids"],
            tc["embedding_dim"],
            tuple(tc["hidden"]),
            tc["output_dim"],
            tc["temperature"],
            tc["interaction_head"],
        )
        for _ in range(meta.get("members", 1))
    ]
    model = members[0] if len(members) == 1 else TwoTowerEnsemble(members)
    model.load_state_dict(torch.load(path / STATE, weights_only=True))
    model.eval()
    return TrainedModel(
        model=model,
        schema=meta["schema"],
        vocabularies=meta["vocabularies"],
        dense_stats=meta["dense_stats"],
        spec=meta["spec"],
        train_config=tc,
        n_ids=meta["n_ids"],
        history=meta["history"],
    )
