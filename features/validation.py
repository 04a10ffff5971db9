"""Data validation with Great Expectations 1.x: suites for the raw follows/accounts and for
the feature tables (schema, nulls, keys, self-follows, referential integrity, ranges, row
counts) plus drift against the last successful run. Results are kept as Data Docs; a
failure raises ValidationFailed naming every failed expectation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from followrec.core.atomic import atomic_write
from followrec.core.config import ValidationConfig
from followrec.features.contract import REQUIRED

STATS_FILE = "last_success.json"  # drift reference: statistics of the last passing run


class ValidationFailed(Exception):
    """A suite failed; `failed` lists 'suite: expectation(column)' for each failure."""

    def __init__(self, suite: str, failed: list[str], docs: str | None) -> None:
        self.suite = suite
        self.failed = failed
        self.docs = docs
        where = f" (Data Docs: {docs})" if docs else ""
        super().__init__(f"validation suite {suite!r} failed: {'; '.join(failed)}{where}")


def _expectations_raw(
    accounts: pd.DataFrame, follows: pd.DataFrame, cfg: ValidationConfig
) -> dict[str, tuple[pd.DataFrame, list]]:
    import great_expectations.expectations as gxe

    n = len(accounts)
    account_checks: list = [gxe.ExpectColumnToExist(column=c) for c in REQUIRED["accounts"]]
    account_checks += [
        gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_accounts),
        gxe.ExpectColumnValuesToNotBeNull(column="account_id"),
        gxe.ExpectColumnValuesToBeUnique(column="account_id"),
        gxe.ExpectColumnValuesToBeBetween(column="account_id", min_value=0, max_value=n - 1),
    ]
    follow_checks: list = [gxe.ExpectColumnToExist(column=c) for c in REQUIRED["follows"]]
    follow_checks.append(gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_follows))
    frame = follows
    endpoints = [c for c in ("follower_id", "followee_id") if c in follows.columns]
    for column in endpoints:
        follow_checks += [
            gxe.ExpectColumnValuesToNotBeNull(column=column),
            # Account ids are dense and unique (accounts suite), so the range is the
            # referential-integrity check: every endpoint is a known account.
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=n - 1),
        ]
    if len(endpoints) == 2:
        frame = follows.assign(is_self_follow=follows["follower_id"] == follows["followee_id"])
        follow_checks += [
            gxe.ExpectColumnValuesToBeInSet(column="is_self_follow", value_set=[False]),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=endpoints),
        ]
    return {"raw_accounts": (accounts, account_checks), "raw_follows": (frame, follow_checks)}


def follow_stats(consumer: pd.DataFrame, producer: pd.DataFrame) -> dict[str, Any]:
    """What drift is measured on: follower-count median and spread, mean follows per user."""
    followers = producer["follower_count"].to_numpy(dtype=np.float64)
    return {
        "follower_count_median": float(np.median(followers)),
        "follower_count_stdev": float(np.std(followers, ddof=1)) if len(followers) > 1 else 0.0,
        "mean_follow_count": float(consumer["follow_count"].mean()),
        "accounts": len(producer),
    }


def _expectations_features(
    consumer: pd.DataFrame,
    producer: pd.DataFrame,
    n_accounts: int,
    previous: dict[str, Any] | None,
    cfg: ValidationConfig,
) -> dict[str, tuple[pd.DataFrame, list]]:
    import great_expectations.expectations as gxe

    consumer_checks: list = [
        gxe.ExpectTableRowCountToEqual(value=n_accounts),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToBeUnique(column="user_id"),
        gxe.ExpectColumnValuesToBeBetween(column="follow_count", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="follow_count_bucket", min_value=0, max_value=15),
    ]
    producer_checks: list = [
        gxe.ExpectTableRowCountToEqual(value=n_accounts),
        gxe.ExpectColumnValuesToNotBeNull(column="account_id"),
        gxe.ExpectColumnValuesToBeUnique(column="account_id"),
        gxe.ExpectColumnValuesToBeBetween(column="follower_count", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="account_age_days", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(
            column="follower_same_language_share", min_value=0, max_value=1
        ),
    ]
    if previous:
        # A collapsed distribution (everyone follows a few accounts) keeps the mean follower
        # count but moves its median and spread; both are bounded relative to last time.
        shift = cfg.max_distribution_shift
        for expectation, stat in (
            (gxe.ExpectColumnMedianToBeBetween, "follower_count_median"),
            (gxe.ExpectColumnStdevToBeBetween, "follower_count_stdev"),
        ):
            value = previous[stat]
            producer_checks.append(
                expectation(
                    column="follower_count",
                    min_value=value * (1 - shift),
                    max_value=value * (1 + shift) + 1,
                )
            )
        mean = previous["mean_follow_count"]
        consumer_checks.append(
            gxe.ExpectColumnMeanToBeBetween(
                column="follow_count",
                min_value=mean * (1 - cfg.max_mean_shift),
                max_value=mean * (1 + cfg.max_mean_shift),
            )
        )
    return {
        "features_consumer": (consumer, consumer_checks),
        "features_producer": (producer, producer_checks),
    }


def _scalar_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """GX's pandas metrics cannot hash list cells; a list column is checked by its lengths."""
    out = frame.copy(deep=False)
    for column in frame.columns:
        if frame[column].dtype == object:
            first = frame[column].dropna().head(1)
            if len(first) and isinstance(first.iloc[0], list | tuple | np.ndarray):
                out[column] = frame[column].map(lambda v: -1 if v is None else len(v))
    return out


def _run_suites(
    name: str, suites: dict[str, tuple[pd.DataFrame, list]], gx_dir: Path
) -> dict[str, Any]:
    """Run each suite through one checkpoint with Data Docs; return a JSON-able summary."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    gx_dir.mkdir(parents=True, exist_ok=True)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_or_update_pandas(name="followrec")
    definitions, frames = [], {}
    for suite_name, (frame, expectations) in suites.items():
        try:
            asset = source.get_asset(suite_name)
        except LookupError:
            asset = source.add_dataframe_asset(name=suite_name)
        try:
            batch = asset.get_batch_definition(suite_name)
        except KeyError:
            batch = asset.add_batch_definition_whole_dataframe(suite_name)
        suite = context.suites.add_or_update(
            gx.ExpectationSuite(name=suite_name, expectations=expectations)
        )
        definitions.append(
            context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
            )
        )
        frames[suite_name] = _scalar_frame(frame)
    summary: dict[str, Any] = {"suites": {}, "success": True}
    # One checkpoint per suite: each validates its own dataframe.
    for definition in definitions:
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=f"{name}-{definition.name}",
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="data_docs")],
                result_format="SUMMARY",
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frames[definition.name]})
        for validation in result.run_results.values():
            failed = [_describe(r.expectation_config) for r in validation.results if not r.success]
            summary["suites"][definition.name] = {
                "success": bool(validation.success),
                "evaluated": len(validation.results),
                "failed": failed,
            }
            summary["success"] &= bool(validation.success)
    docs = gx_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    summary["data_docs"] = str(docs) if docs.exists() else None
    return summary


def _describe(config: Any) -> str:
    kwargs = config.kwargs
    target = kwargs.get("column") or ",".join(kwargs.get("column_list") or []) or "table"
    return f"{config.type}({target})"


def _finish(kind: str, summary: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    atomic_write(out_dir / f"{kind}.json", json.dumps(summary, indent=2))
    if not summary["success"]:
        failed = [f"{s}: {f}" for s, v in summary["suites"].items() for f in v["failed"]]
        raise ValidationFailed(kind, failed, summary["data_docs"])
    return summary


def validate_raw(
    accounts: pd.DataFrame, follows: pd.DataFrame, cfg: ValidationConfig, out_dir: str | Path
) -> dict[str, Any]:
    """Raw suites; writes OUT/raw.json; raises ValidationFailed on any failure."""
    out_dir = Path(out_dir)
    summary = _run_suites("raw", _expectations_raw(accounts, follows, cfg), out_dir)
    return _finish("raw", summary, out_dir)


def validate_features(
    consumer: pd.DataFrame, producer: pd.DataFrame, cfg: ValidationConfig, out_dir: str | Path
) -> dict[str, Any]:
    """Feature suites with drift against the last passing run; on success the current
    statistics become the next run's reference."""
    out_dir = Path(out_dir)
    stats_path = out_dir / STATS_FILE
    previous = json.loads(stats_path.read_text()) if stats_path.exists() else None
    suites = _expectations_features(consumer, producer, len(producer), previous, cfg)
    summary = _run_suites("features", suites, out_dir)
    summary["drift_reference"] = previous
    summary = _finish("features", summary, out_dir)
    atomic_write(stats_path, json.dumps(follow_stats(consumer, producer), indent=2))
    return summary
