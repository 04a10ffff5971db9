"""A pipeline run on Twitch PTBR with two registered models, and the real service over it
(`followrec serve`: uvicorn on loopback, in a subprocess)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from followrec.cli import main
from followrec.serving import launch

API_KEY = "test-read-key-4f1d"
ADMIN_KEY = "test-admin-key-9c2e"
KEYS = {"FOLLOWREC_API_KEY": API_KEY, "FOLLOWREC_ADMIN_API_KEY": ADMIN_KEY}
# A password the run's settings refer to as ${FOLLOWREC_REDIS_PASSWORD}: it must never be
# written down (tests/serving/test_secrets.py greps for it and for both keys).
PLANTED_PASSWORD = "planted-password-71b3"
TRAIN = [
    "--quiet",
    "--set",
    "eval.two_tower=[two_tower]",
    "--set",
    "baselines.sources=[popularity]",
]


@pytest.fixture(scope="package")
def pipeline_run(tmp_path_factory, twitch_dir) -> Path:
    """Features for PTBR; model v1 (a few steps) then v2 (six epochs), which is promoted, so
    v1 stays as the previous champion with its own published index."""
    run = tmp_path_factory.mktemp("serving") / "run"
    os.environ["FOLLOWREC_REDIS_PASSWORD"] = PLANTED_PASSWORD
    redis = "feast.redis_connection=127.0.0.1:6379,password=${FOLLOWREC_REDIS_PASSWORD}"
    assert main(["features", "--run", str(run), "--dataset", "twitch", "--quiet",
                 "--set", "data.twitch_languages=[PTBR]", "--set", redis,
                 "--set", f"data.twitch_dir={twitch_dir}"]) == 0  # fmt: skip
    assert main(["training", "--run", str(run), *TRAIN, "--set", "train.max_steps=3"]) == 0
    assert (
        main(
            [
                "training",
                "--run",
                str(run),
                *TRAIN,
                "--set",
                "train.epochs=6",
                "--set",
                "train.max_steps=null",
            ]
        )
        == 0
    )
    return run


@pytest.fixture()
def own_run(pipeline_run, tmp_path) -> Path:
    """A copy of the pipeline run for a test that moves its champion or publishes an index,
    so no other test sees what it changed (the registry and the indexes are the copy's)."""
    return Path(shutil.copytree(pipeline_run, tmp_path / "run", symlinks=True))


@contextlib.contextmanager
def running_service(run: Path, *settings: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """The real service (polling the champion every 0.5 s); no request may have been a 500."""
    with launch.running_service(
        run, "--set", "serving.poll_seconds=0.5", *settings, env=env
    ) as url:
        yield url
    errors = launch.server_errors(run)
    assert not errors, errors[:3]


@pytest.fixture(scope="package")
def service(pipeline_run) -> Iterator[str]:
    """The service with a read key and an admin key (from the environment) over the run."""
    with running_service(pipeline_run, env=KEYS) as url:
        yield url


@pytest.fixture()
def client(service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service, headers={"X-API-Key": API_KEY}, timeout=30) as c:
        yield c


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(2)
    raise AssertionError(f"{what} not ready after {seconds}s ({last!r})")
