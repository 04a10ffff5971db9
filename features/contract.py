"""The raw data contract: `accounts`, `follows` and optional `engagements` Parquet tables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from followrec.core.atomic import atomic_dir
from followrec.core.errors import InputError

# Required columns per table and the check each must pass. Unknown columns are kept.
REQUIRED: dict[str, dict[str, str]] = {
    "accounts": {
        "account_id": "int",
        "external_id": "string",
        "created_at": "timestamp",
        "language": "string",
        "country": "string",
        "topics": "list",
    },
    "follows": {"follower_id": "int", "followee_id": "int", "event_timestamp": "timestamp"},
    "engagements": {
        "user_id": "int",
        "account_id": "int",
        "kind": "string",
        "event_timestamp": "timestamp",
    },
}


@dataclass
class Dataset:
    """A follow graph in the raw contract, with the load report that produced it.

    Account ids are dense (0..n-1); `external_id` keeps the id the source used.
    `feature_kinds` tells the kind (dense, categorical, bag) of each extra account column.
    """

    name: str
    accounts: pd.DataFrame
    follows: pd.DataFrame
    engagements: pd.DataFrame | None = None
    load_report: dict[str, Any] = field(default_factory=dict)
    feature_kinds: dict[str, str] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)  # synthetic ground truth, if any

    @property
    def n_accounts(self) -> int:
        """Number of accounts (users and producers share one id space)."""
        return len(self.accounts)

    def has_timestamps(self) -> bool:
        """True when every follow carries a time and they are not all equal."""
        ts = self.follows["event_timestamp"]
        return bool(len(ts)) and not ts.isna().any() and ts.nunique() > 1

    def counts(self) -> dict[str, Any]:
        """Size summary for reports."""
        out = {
            "name": self.name,
            "accounts": int(self.n_accounts),
            "follows": int(len(self.follows)),
            "engagements": int(len(self.engagements)) if self.engagements is not None else 0,
            "languages": int(self.accounts["language"].nunique()),
            "has_timestamps": self.has_timestamps(),
        }
        out.update({f"load.{k}": v for k, v in self.load_report.items()})
        return out


def _check_column(table: str, name: str, kind: str, series: pd.Series, source: str) -> None:
    ok = {
        "int": lambda s: pd.api.types.is_integer_dtype(s),
        "string": lambda s: pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s),
        "timestamp": lambda s: pd.api.types.is_datetime64_any_dtype(s),
        "list": lambda s: pd.api.types.is_object_dtype(s),
    }[kind](series)
    if not ok:
        raise InputError(
            f"table '{table}' column has dtype {series.dtype}, expected {kind}",
            path=source,
            field=name,
        )


def validate_contract(ds: Dataset, source: str = "<memory>") -> None:
    """Fail naming table and column when a required column is missing or mistyped."""
    tables = {"accounts": ds.accounts, "follows": ds.follows}
    if ds.engagements is not None:
        tables["engagements"] = ds.engagements
    for table, frame in tables.items():
        for name, kind in REQUIRED[table].items():
            if name not in frame.columns:
                raise InputError(
                    f"table '{table}' is missing a required column", path=source, field=name
                )
            _check_column(table, name, kind, frame[name], source)
    n = len(ds.accounts)
    if n == 0:
        raise InputError("table 'accounts' is empty", path=source)
    ids = ds.accounts["account_id"].to_numpy()
    if not np.array_equal(ids, np.arange(n)):
        raise InputError("account_id must be 0..n-1 in order", path=source, field="account_id")
    if len(ds.follows) == 0:
        raise InputError("table 'follows' is empty: the graph has no edges", path=source)
    for col in ("follower_id", "followee_id"):
        values = ds.follows[col].to_numpy()
        bad = (values < 0) | (values >= n)
        if bad.any():
            raise InputError(
                "follow endpoint is not a known account",
                path=source,
                field=col,
                value=int(values[np.argmax(bad)]),
            )


def write_dataset(ds: Dataset, out_dir: str | Path) -> Path:
    """Write the contract tables as Parquet; the folder appears complete or not at all."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        tables = {"accounts": ds.accounts, "follows": ds.follows, "engagements": ds.engagements}
        for name, frame in tables.items():
            if frame is not None:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                pq.write_table(table, tmp / f"{name}.parquet")
        meta = {"name": ds.name, "load_report": ds.load_report, "feature_kinds": ds.feature_kinds}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2, default=str))
        if ds.truth:
            np.savez_compressed(tmp / "truth.npz", **ds.truth)
    return out_dir


def read_dataset(in_dir: str | Path, validate: bool = True) -> Dataset:
    """Read contract tables written by `write_dataset` (or by any producer of the contract).
    validate=False leaves the checks to the validation suites (they name every failure)."""
    in_dir = Path(in_dir)
    for table in ("accounts", "follows"):
        if not (in_dir / f"{table}.parquet").exists():
            raise InputError(f"missing table '{table}.parquet'", path=str(in_dir))
    meta_path = in_dir / "dataset.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    eng_path = in_dir / "engagements.parquet"
    truth_path = in_dir / "truth.npz"
    ds = Dataset(
        name=meta.get("name", in_dir.name),
        accounts=pd.read_parquet(in_dir / "accounts.parquet"),
        follows=pd.read_parquet(in_dir / "follows.parquet"),
        engagements=pd.read_parquet(eng_path) if eng_path.exists() else None,
        load_report=meta.get("load_report", {}),
        feature_kinds=meta.get("feature_kinds", {}),
        truth=dict(np.load(truth_path)) if truth_path.exists() else {},
    )
    if validate:
        validate_contract(ds, str(in_dir))
    return ds
