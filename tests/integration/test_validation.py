"""Corrupted inputs fail the features pipeline by expectation name, before anything reaches
Feast or training, and leave a promoted champion and its published index untouched."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from followrec.cli import main
from followrec.features.contract import read_dataset, write_dataset
from followrec.indexing.store import read_pointer
from followrec.registry.aliases import CHAMPION, alias_version
from followrec.registry.tracking import registry_client

SMALL = ["--set", "data.twitch_languages=[PTBR]", "--set", "train.epochs=1",
         "--set", "eval.two_tower=[two_tower]", "--set", "baselines.sources=[popularity]",
         "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    """A run folder with a champion and a published index, and its clean raw tables."""
    run = tmp_path_factory.mktemp("validation") / "run"
    assert main(["features", "--dataset", "twitch", "--run", str(run), *SMALL]) == 0
    assert main(["training", "--run", str(run), *SMALL]) == 0
    clean = run.parent / "clean"
    shutil.copytree(run / "raw", clean)
    return run, clean


def corrupt(clean, target, change):
    ds = read_dataset(clean)
    change(ds)
    write_dataset(ds, target)
    return target


def _nulls(ds):
    ds.follows["followee_id"] = ds.follows["followee_id"].astype("Int64")
    ds.follows.loc[ds.follows.index[:5], "followee_id"] = pd.NA


def _self_follows(ds):
    ds.follows.loc[ds.follows.index[:3], "followee_id"] = ds.follows["follower_id"].iloc[:3]


def _unknown_ids(ds):
    ds.follows.loc[ds.follows.index[0], "follower_id"] = len(ds.accounts) + 7


def _dropped_column(ds):
    ds.follows.drop(columns=["event_timestamp"], inplace=True)


def _collapsed(ds):
    # Everyone follows the same few accounts: mean follows per user unchanged, the
    # follower-count distribution collapses.
    rng = np.random.default_rng(0)
    followers = ds.follows["follower_id"].to_numpy()
    targets = rng.choice(np.arange(5), size=len(followers))
    targets = np.where(targets == followers, (targets + 1) % 5, targets)
    ds.follows = ds.follows.assign(followee_id=targets).drop_duplicates(
        ["follower_id", "followee_id"]
    )


CASES = {
    "nulls": (_nulls, "raw_follows: expect_column_values_to_not_be_null(followee_id)"),
    "self_follows": (_self_follows, "expect_column_values_to_be_in_set(is_self_follow)"),
    "unknown_ids": (_unknown_ids, "expect_column_values_to_be_between(follower_id)"),
    "dropped_column": (_dropped_column, "expect_column_to_exist(event_timestamp)"),
    "collapsed": (_collapsed, "features_producer: expect_column_median_to_be_between"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_corrupted_input_fails_by_name_and_promotes_nothing(promoted, case, capsys):
    run, clean = promoted
    change, expected = CASES[case]
    bad = corrupt(clean, run.parent / f"bad-{case}", change)
    pointer = read_pointer(run / "indexes")
    features_before = (run / "features" / "manifest.json").read_text()
    raw_before = (run / "raw" / "follows.parquet").read_bytes()
    online_before = (run / "feast" / "online.db").stat().st_mtime_ns
    capsys.readouterr()
    code = main(["features", "--dataset", "parquet", "--path", str(bad), "--run", str(run),
                 *SMALL])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3, err
    assert expected in err
    assert "Data Docs" in err
    # Training never ran: the champion, its index and the online store are as they were.
    client = registry_client(f"sqlite:///{run / 'mlflow.db'}")
    assert str(alias_version(client, CHAMPION).version) == "1"
    assert len(client.search_model_versions("name='followrec-two-tower'")) == 1
    assert read_pointer(run / "indexes") == pointer
    assert (run / "feast" / "online.db").stat().st_mtime_ns == online_before
    # The validated tables that Feast and training read were not overwritten.
    assert (run / "features" / "manifest.json").read_text() == features_before
    assert (run / "raw" / "follows.parquet").read_bytes() == raw_before
    results = json.loads(
        (run / "validation" / ("features.json" if case == "collapsed" else "raw.json")).read_text()
    )
    assert results["success"] is False
    # The failed validation is an MLflow run with its Data Docs.
    runs = client.search_runs(
        [client.get_experiment_by_name("followrec").experiment_id],
        "tags.`validation.success` = 'False'",
    )
    assert runs and "data_docs" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
