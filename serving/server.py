"""`followrec serve`: the candidate API under uvicorn, over one run's champion."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from followrec.core.config import Config, require
from followrec.core.errors import InputError
from followrec.core.secrets import secret

# What `serve` hands each worker process (uvicorn starts them by import string).
WORKER_ENV = "FOLLOWREC_SERVE_WORKER"


def check_settings(cfg: Config) -> None:
    """Refuse bad serving settings, naming the field, before any process starts."""
    sc = cfg.serving
    require(
        {
            "serving.cache_size": sc.cache_size >= 0,
            "serving.poll_seconds": sc.poll_seconds >= 0,
            "serving.cold_start_max_follows": sc.cold_start_max_follows >= 0,
            "serving.max_body_bytes": sc.max_body_bytes >= 0,
            "serving.max_new_users": sc.max_new_users >= 0,
        },
        sc,
        "must not be negative",
    )
    require(
        {"serving.workers": sc.workers >= 1, "serving.threads": sc.threads >= 1},
        sc,
        "must be at least 1",
    )
    ec = cfg.experiments
    require({"experiments.poll_seconds": ec.poll_seconds > 0}, ec, "must be positive")


def build_app(cfg: Config, run_dir: str | Path, shared: str | Path | None = None) -> Any:
    """The FastAPI app for a run, with the settings in cfg.serving. `shared`: the folder
    through which the worker processes of one service retire each other's cached results
    and add up their metrics."""
    from followrec.serving.app import create_app
    from followrec.serving.candidates import Recommender
    from followrec.serving.shared import Generations, WorkerLock

    check_settings(cfg)
    sc = cfg.serving
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import torch

    # One user per forward pass: threads across requests beat threads inside one.
    torch.set_num_threads(1)
    generations = Generations(Path(shared) / "generations.bin") if shared else None
    event_lock = WorkerLock(Path(shared) / "events.lock") if shared else None
    return create_app(
        lambda: Recommender(
            run_dir, cfg, sc.cache_size, sc.cold_start_max_follows, generations, event_lock
        ),
        api_key=secret("FOLLOWREC_API_KEY"),
        admin_key=secret("FOLLOWREC_ADMIN_API_KEY"),
        poll_seconds=sc.poll_seconds,
        max_body_bytes=sc.max_body_bytes,
        experiments_factory=(
            (lambda: open_experiments(cfg, run_dir)) if cfg.experiments.log_exposures else None
        ),
        experiment_poll_seconds=cfg.experiments.poll_seconds,
        metrics_folder=str(Path(shared) / "metrics") if shared else None,
        request_threads=sc.threads,
    )


def worker_app() -> Any:
    """One worker process's app (uvicorn's factory): the run, settings and shared folder
    that `serve` put in the environment."""
    from followrec.core.config import load_config
    from followrec.serving.app import configure_logging

    given = json.loads(os.environ[WORKER_ENV])
    cfg = load_config(None, base=given["settings"])
    configure_logging(cfg.serving.log_level)
    return build_app(cfg, given["run"], given["shared"])


def open_experiments(cfg: Config, run_dir: str | Path) -> tuple[Any, Any]:
    """The running experiment's reader and the exposure log, on the configured store."""
    from followrec.evaluation.exposures import ExperimentStore, store_url
    from followrec.serving.experiments import Experiments, ExposureLog

    store = ExperimentStore(store_url(cfg.experiments.store, Path(run_dir)))
    return Experiments(store, Path(run_dir)), ExposureLog(store)


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(cfg: Config, run_dir: str | Path, host: str | None, port: int | None) -> int:
    """Run the service until interrupted."""
    import uvicorn

    from followrec.serving.app import configure_logging

    host = host or cfg.serving.host
    if not is_loopback(host) and secret("FOLLOWREC_API_KEY") is None:
        raise InputError(
            "refusing to serve beyond this machine without an API key: set "
            "$FOLLOWREC_API_KEY (and $FOLLOWREC_ADMIN_API_KEY for the admin routes)",
            field="--host",
            value=host,
        )
    configure_logging(cfg.serving.log_level)
    options = {
        "host": host,
        "port": port or cfg.serving.port,
        "log_level": "warning",
        "access_log": False,  # the app logs each request as JSON
    }
    check_settings(cfg)
    workers = cfg.serving.workers
    if workers == 1:
        uvicorn.run(build_app(cfg, run_dir), **options)
        return 0
    # Several processes on one port (the kernel spreads connections): each loads the model
    # and index; a folder shared for their cache counters and metrics lives as long as they.
    shared = tempfile.mkdtemp(prefix="followrec-serve-")
    from followrec.serving.shared import Generations

    Generations(Path(shared) / "generations.bin")  # made before any worker maps it
    os.environ[WORKER_ENV] = json.dumps(
        {"run": str(Path(run_dir).resolve()), "settings": cfg.flat(), "shared": shared}
    )
    try:
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **options)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    return 0
