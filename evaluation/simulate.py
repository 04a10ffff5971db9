"""A simulated population for online experiments: users of the synthetic generator (which
knows every user's true follow propensities) ask the REAL running service for candidates
over HTTP, look down the list with a position bias, follow with their ground-truth
probability, sometimes unfollow later, and send those events back through
`POST /v1/events` (so Feast's online rows, and their next candidates, change).

Seeded per user, so a run is reproducible whatever the thread interleaving; bounded in
users, requests and seconds; it only talks to the URL it is given (loopback in tests)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from followrec.core.config import Config
from followrec.core.errors import InputError
from followrec.features.synthetic import generate, true_follow_probability


@dataclass(frozen=True)
class Behaviour:
    """How simulated users react to a list."""

    k: int = 20  # candidates asked for per session
    sessions: int = 1  # requests per user (events of one session shape the next)
    follow_scale: float = 1.0  # P(follow | seen) = 1 - exp(-scale * degree * p_true)
    position_decay: float = 1.0  # P(seen at rank i) = 1 / log2(i + 2) ** decay
    unfollow_rate: float = 0.3  # P(unfollow) = rate * (1 - P(follow | seen))


def ground_truth(cfg: Config, run_dir: Path) -> dict[str, np.ndarray]:
    """The generator's truth for the run's synthetic data: saved beside the raw tables by
    the ingest step, else regenerated from the run's settings (same seed, same graph)."""
    saved = Path(cfg.data.parquet_dir or run_dir / "raw") / "truth.npz"
    if cfg.data.dataset == "parquet" and saved.exists():
        return dict(np.load(saved))
    if cfg.data.dataset != "synthetic":
        raise InputError(
            "the simulator needs a run on synthetic data (its users' true affinities)",
            field="data.dataset",
            value=cfg.data.dataset,
        )
    return generate(cfg.synthetic, progress=False).truth


def session_outcome(
    truth: dict[str, np.ndarray],
    user: int,
    shown: list[int],
    behaviour: Behaviour,
    rng: np.random.Generator,
) -> tuple[list[int], list[int]]:
    """Which shown accounts the user follows and which of those are unfollowed later."""
    if not shown:
        return [], []
    accounts = np.asarray(shown, dtype=np.int64)
    p_true = true_follow_probability(truth, np.full(len(accounts), user), accounts)
    degree = float(truth["target_degree"][user])
    affinity = 1.0 - np.exp(-behaviour.follow_scale * degree * p_true)
    seen = 1.0 / np.log2(np.arange(len(accounts)) + 2.0) ** behaviour.position_decay
    followed = rng.random(len(accounts)) < seen * affinity
    unfollowed = followed & (rng.random(len(accounts)) < behaviour.unfollow_rate * (1 - affinity))
    return accounts[followed].tolist(), accounts[unfollowed].tolist()


def simulate(
    url: str,
    truth: dict[str, np.ndarray],
    n_users: int,
    seed: int,
    behaviour: Behaviour = Behaviour(),
    concurrency: int = 8,
    max_seconds: float = 1800.0,
    api_key: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `n_users` seeded users against the service at `url`; returns what happened
    (requests, follows, unfollows, users per arm the service reported, errors)."""
    n_accounts = len(truth["language"])
    if not 1 <= n_users <= n_accounts:
        raise InputError(f"must be between 1 and {n_accounts}", field="--users", value=n_users)
    users = np.random.default_rng(seed).choice(n_accounts, size=n_users, replace=False)
    headers = {"X-API-Key": api_key} if api_key else {}
    local = threading.local()
    lock = threading.Lock()
    totals: Counter[str] = Counter()
    arms: Counter[str] = Counter()
    errors: list[str] = []
    deadline = time.monotonic() + max_seconds
    bar = tqdm(total=n_users, desc="simulated users", disable=not progress, unit="user")

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, headers=headers, timeout=60)
        return local.client

    def one_user(user: int) -> None:
        if time.monotonic() > deadline:
            with lock:
                totals["skipped_deadline"] += 1
            return
        rng = np.random.default_rng([seed, int(user)])
        http = client()
        counts: Counter[str] = Counter()
        arm = None
        try:
            for _ in range(behaviour.sessions):
                reply = http.get(f"/v1/users/{int(user)}/candidates", params={"k": behaviour.k})
                reply.raise_for_status()
                body = reply.json()
                arm = (body.get("experiment") or {}).get("arm", arm)
                shown = [c["account_id"] for c in body["candidates"]]
                counts["requests"] += 1
                counts["shown"] += len(shown)
                follows, unfollows = session_outcome(truth, int(user), shown, behaviour, rng)
                for kind, accounts in (("follow", follows), ("unfollow", unfollows)):
                    for account in accounts:
                        event = {"user_id": int(user), "type": kind, "account_id": int(account)}
                        http.post("/v1/events", json=event).raise_for_status()
                        counts[f"{kind}s"] += 1
        except httpx.HTTPError as exc:
            counts["errors"] += 1
            with lock:
                if len(errors) < 10:
                    errors.append(f"user {int(user)}: {exc}")
        with lock:
            totals.update(counts)
            if arm is not None:
                arms[arm] += 1
            bar.update()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one_user, users))
    bar.close()
    seconds = time.perf_counter() - started
    return {
        "users": n_users,
        "seed": seed,
        "seconds": round(seconds, 1),
        "requests_per_second": round(totals["requests"] / max(seconds, 1e-9), 1),
        "requests": totals["requests"],
        "shown": totals["shown"],
        "follows": totals["follows"],
        "unfollows": totals["unfollows"],
        "errors": totals["errors"],
        "skipped_deadline": totals["skipped_deadline"],
        "users_per_arm": dict(arms),
        "error_samples": errors,
        "behaviour": behaviour.__dict__,
    }
