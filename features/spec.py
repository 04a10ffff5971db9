"""Declarative tower spec: which features feed each tower, and the schema (with a hash)
that is derived from it and the feature tables."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from followrec.core.errors import InputError
from followrec.features.bags import bag_to_csr
from followrec.features.transforms import FIXED_CARDINALITY, FeatureTables

KINDS = ("categorical", "id_bag", "dense", "vector")
ID_SPACES = ("accounts", "topics")  # shared id tables a bag can index


@dataclass(frozen=True)
class FeatureSpec:
    """One tower input: a column of the tower's feature table and how to read it."""

    name: str
    kind: str
    ids: str | None = None  # id_bag: which id table (accounts | topics)
    transform: str | None = None  # dense: optional "log1p"


@dataclass(frozen=True)
class TowerSpec:
    """Feature lists of the consumer and producer towers."""

    consumer: tuple[FeatureSpec, ...]
    producer: tuple[FeatureSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, the YAML form."""
        return {
            tower: [
                {k: v for k, v in asdict(f).items() if v is not None} for f in getattr(self, tower)
            ]
            for tower in ("consumer", "producer")
        }


DEFAULT_SPEC = {
    "consumer": [
        {"name": "language", "kind": "categorical"},
        {"name": "country", "kind": "categorical"},
        {"name": "topics", "kind": "id_bag", "ids": "topics"},
        {"name": "follow_count_bucket", "kind": "categorical"},
        {"name": "follows", "kind": "id_bag", "ids": "accounts"},
        {"name": "recent_follows", "kind": "id_bag", "ids": "accounts"},
    ],
    "producer": [
        {"name": "account_id", "kind": "id_bag", "ids": "accounts"},
        {"name": "language", "kind": "categorical"},
        {"name": "country", "kind": "categorical"},
        {"name": "topics", "kind": "id_bag", "ids": "topics"},
        {"name": "follower_top_topics", "kind": "id_bag", "ids": "topics"},
        {"name": "log_follower_count", "kind": "dense"},
        {"name": "account_age_days", "kind": "dense", "transform": "log1p"},
        {"name": "follower_language_dist", "kind": "vector"},
        {"name": "follower_country_dist", "kind": "vector"},
        {"name": "follower_same_language_share", "kind": "dense"},
    ],
}


def parse_spec(tree: dict[str, Any], source: str = "<spec>") -> TowerSpec:
    """Validate a spec mapping; errors name the tower and feature."""
    towers = {}
    for tower in ("consumer", "producer"):
        items = tree.get(tower)
        if not items:
            raise InputError("tower has no features", path=source, field=tower)
        feats = []
        for item in items:
            name = item.get("name")
            kind = item.get("kind")
            if not name:
                raise InputError("feature without a name", path=source, field=tower)
            if kind not in KINDS:
                raise InputError(
                    f"unknown kind; expected one of {', '.join(KINDS)}",
                    path=source,
                    field=f"{tower}.{name}.kind",
                    value=kind,
                )
            ids = item.get("ids")
            if kind == "id_bag" and ids not in ID_SPACES:
                raise InputError(
                    f"id_bag needs ids: one of {', '.join(ID_SPACES)}",
                    path=source,
                    field=f"{tower}.{name}.ids",
                    value=ids,
                )
            feats.append(
                FeatureSpec(name=name, kind=kind, ids=ids, transform=item.get("transform"))
            )
        towers[tower] = tuple(feats)
    return TowerSpec(**towers)


def load_spec(path: str | Path | None = None) -> TowerSpec:
    """The default spec, or one read from YAML."""
    if path is None:
        return parse_spec(DEFAULT_SPEC, "default")
    if not Path(path).exists():
        raise InputError("tower spec file not found", path=str(path), field="train.spec")
    tree = yaml.safe_load(Path(path).read_text())
    if not isinstance(tree, dict):
        raise InputError(
            "a tower spec is a mapping with consumer and producer lists", path=str(path)
        )
    return parse_spec(tree, str(path))


def _describe(
    tower: str,
    feat: FeatureSpec,
    frame: pd.DataFrame,
    tables: FeatureTables,
    n_accounts: int,
    n_topics: int,
) -> dict[str, Any]:
    field = f"{tower}.{feat.name}"
    if feat.name not in frame.columns:
        raise InputError(
            f"feature not in the {tower} feature table (have: {', '.join(frame.columns)})",
            field=field,
        )
    col = frame[feat.name]
    entry: dict[str, Any] = {"name": feat.name, "kind": feat.kind}
    if feat.kind == "categorical":
        if feat.name in tables.vocabularies:
            entry["cardinality"] = len(tables.vocabularies[feat.name])
        elif feat.name in FIXED_CARDINALITY:
            entry["cardinality"] = FIXED_CARDINALITY[feat.name]
        elif pd.api.types.is_integer_dtype(col):
            if (col < 0).any():
                raise InputError(
                    "categorical codes must be >= 0", field=field, value=int(col.min())
                )
            entry["cardinality"] = int(col.max()) + 1
        else:
            raise InputError(
                "categorical feature has no vocabulary and is not integer codes",
                field=field,
                value=str(col.dtype),
            )
    elif feat.kind == "id_bag":
        if pd.api.types.is_integer_dtype(col):
            values = col.to_numpy()
        else:
            try:
                _, values = bag_to_csr(col)
            except Exception as exc:  # pyarrow raises several types for non-lists
                raise InputError(f"expected a list of ids ({exc})", field=field) from None
        entry["ids"] = feat.ids
        entry["cardinality"] = n_accounts if feat.ids == "accounts" else n_topics
        if len(values) and (values.min() < 0 or values.max() >= entry["cardinality"]):
            raise InputError(
                f"id outside the {feat.ids} table", field=field, value=int(values.max())
            )
    elif feat.kind == "dense":
        if not pd.api.types.is_numeric_dtype(col):
            raise InputError("dense feature is not numeric", field=field, value=str(col.dtype))
        entry["transform"] = feat.transform
    else:  # vector
        lengths = col.map(len).to_numpy() if len(col) else np.array([0])
        if lengths.min() != lengths.max() or lengths.max() == 0:
            raise InputError(
                "vector feature rows differ in length",
                field=field,
                value=f"{lengths.min()}..{lengths.max()}",
            )
        entry["length"] = int(lengths[0])
    return entry


def build_schema(spec: TowerSpec, tables: FeatureTables) -> dict[str, Any]:
    """Per feature: kind and shape, derived from the tables; `hash` identifies names,
    kinds and vector lengths (what serving must be able to fetch)."""
    n_accounts = len(tables.producer)
    topics = pd.concat(
        [
            tables.producer["topics"],
            tables.producer.get("follower_top_topics", tables.producer["topics"]),
        ]
    )
    _, topic_values = bag_to_csr(topics)
    n_topics = int(topic_values.max()) + 1 if len(topic_values) else 1
    schema: dict[str, Any] = {"consumer": [], "producer": []}
    for tower, frame in (("consumer", tables.consumer), ("producer", tables.producer)):
        schema[tower] = [
            _describe(tower, f, frame, tables, n_accounts, n_topics) for f in getattr(spec, tower)
        ]
    identity = {
        tower: [{k: v for k, v in e.items() if k not in ("cardinality",)} for e in schema[tower]]
        for tower in ("consumer", "producer")
    }
    schema["hash"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return schema
