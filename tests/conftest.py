"""Shared fixtures: paths to the real data and small hand-made graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from followrec.features.bags import csr_to_bag
from followrec.features.contract import Dataset

REPO = Path(__file__).resolve().parents[1]
TWITCH = (REPO / ".." / "shared" / "data" / "twitch").resolve()


@pytest.fixture(scope="session")
def twitch_dir() -> Path:
    """The MUSAE Twitch graphs (shared/data beside the checkout, as in CI)."""
    if not (TWITCH / "DE").is_dir():
        raise RuntimeError(f"real data missing: expected the Twitch graphs at {TWITCH}")
    return TWITCH


def make_dataset(
    follows: list[tuple[int, int]],
    n: int | None = None,
    languages: list[str] | None = None,
    times: list[float] | None = None,
    topics: list[list[int]] | None = None,
) -> Dataset:
    """A tiny Dataset from (follower, followee) pairs."""
    n = n or (max(max(p) for p in follows) + 1)
    topics = topics or [[i % 3] for i in range(n)]
    lengths = np.array([len(t) for t in topics])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    accounts = pd.DataFrame(
        {
            "account_id": np.arange(n, dtype=np.int64),
            "external_id": [f"a{i}" for i in range(n)],
            "created_at": pd.to_datetime(np.arange(n) * 86400, unit="s", utc=True),
            "language": languages or ["en"] * n,
            "country": [None] * n,
            "topics": csr_to_bag(
                indptr, np.array([t for ts in topics for t in ts], dtype=np.int64)
            ),
        }
    )
    src, dst = zip(*follows)
    stamps = (
        pd.to_datetime(np.asarray(times), unit="s", utc=True)
        if times is not None
        else pd.Series(pd.NaT, index=range(len(src)), dtype="datetime64[ns, UTC]")
    )
    frame = pd.DataFrame(
        {
            "follower_id": np.array(src, dtype=np.int64),
            "followee_id": np.array(dst, dtype=np.int64),
            "event_timestamp": stamps,
        }
    )
    return Dataset(name="tiny", accounts=accounts, follows=frame)


SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
}


def _reachable(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# The longest files, longest first (measured: `make test` prints the slowest). `make test`
# hands whole files to two workers in collection order, so starting these first keeps one
# worker from running a 7-minute file alone at the end.
LONGEST_FIRST = (
    "tests/integration/test_crash_safety.py",
    "tests/services/test_deploy.py",
    "tests/serving/test_browser.py",
    "tests/dags/test_pipeline_dags.py",
    "tests/serving/test_swap.py",
    "tests/integration/test_evaluate_cli.py",
    "tests/dags/test_experiments_dag.py",
    "tests/serving/test_service.py",
)


def _schedule_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::")[0]
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    """Tests marked with a service skip, naming it, where it is not listening; with
    FOLLOWREC_REQUIRE_SERVICES=1 (CI) a missing service fails them instead. The longest
    files come first (a stable sort: the rest keep their order)."""
    import os

    missing = [path for path in LONGEST_FIRST if not (REPO / path).is_file()]
    if missing:
        raise pytest.UsageError(f"LONGEST_FIRST names files that do not exist: {missing}")
    items.sort(key=_schedule_rank)

    required = os.environ.get("FOLLOWREC_REQUIRE_SERVICES") == "1"
    for name, (host, port) in SERVICES.items():
        if _reachable(host, port):
            continue
        if required:  # the tests run and fail on the connection, naming the service
            continue
        reason = f"needs {name}: not reachable at {host}:{port}"
        for item in items:
            if name in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
    # Network namespaces need root and iproute2 (CI here has both).
    import shutil

    if (os.geteuid() != 0 or shutil.which("ip") is None) and not required:
        reason = "needs netns: root and iproute2's `ip` (network namespaces)"
        for item in items:
            if "netns" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
    # The browser journeys need Debian's chromium and its driver (`make browser`).
    if not (shutil.which("chromium") and shutil.which("chromedriver")) and not required:
        reason = "needs browser: chromium and chromedriver not found (run `make browser`)"
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


def synthetic_feature_tables(n_accounts: int, mean_follows: int):  # noqa: ANN201
    """Feature tables of a small generated graph (training follows only)."""
    from followrec.core.config import load_config
    from followrec.features.split import split_dataset
    from followrec.features.synthetic import generate
    from followrec.features.transforms import build_features

    cfg = load_config(
        None, [f"synthetic.n_accounts={n_accounts}", f"synthetic.mean_follows={mean_follows}"]
    )
    ds = generate(cfg.synthetic, progress=False)
    split = split_dataset(ds, cfg.split)
    return build_features(
        ds.accounts, split.train, split.train_engagements, cfg.features, ds.feature_kinds
    )
