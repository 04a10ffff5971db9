"""Start `followrec serve` in a subprocess on a free loopback port (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_service(
    run: str | Path, *settings: str, timeout: float = 120, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`followrec serve --run RUN` with extra `--set` arguments and environment (its keys);
    yields the base URL once /readyz answers 200 and stops the server on exit. Its log is
    RUN/../serve-PORT.log."""
    run = Path(run)
    port = free_port()
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = run.resolve().parent / f"serve-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "followrec", "serve", "--run", str(run), "--port", str(port),
             *settings],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"followrec serve exited: {log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"followrec serve not ready: {log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def server_errors(run: str | Path) -> list[str]:
    """Log lines of 500 responses from services started beside this run."""
    lines: list[str] = []
    for log in Path(run).resolve().parent.glob("serve-*.log"):
        lines += [line for line in log.read_text().splitlines() if '"status": 500' in line]
    return lines
