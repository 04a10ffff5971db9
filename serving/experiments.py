"""Experiment arms on the live service and the exposure log.

The running experiment's definition is reread from the store every few seconds (a change
needs no restart); a user's arm is a hash of (salt, user id), the same in every replica.
Served lists and events go through a bounded queue to a writer process that inserts them
in batches, so a request never waits on the database nor on its driver's Python code."""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from followrec.evaluation.experiments import BLEND_FILE
from followrec.evaluation.exposures import Arm, Experiment, ExperimentStore

log = logging.getLogger("followrec.serving")
FLUSH_SECONDS = 0.2
SEND_BATCH = 256  # records a request thread hands over at once
BATCH = 2000  # records the writer inserts at once


@dataclass(frozen=True)
class Assignment:
    experiment: str
    arm: Arm


class ExposureLog:
    """Impressions and events, handed in batches to a writer PROCESS that inserts them: the
    database work never holds this process's GIL. A request only appends to a list; a
    flusher thread sends the list every FLUSH_SECONDS or at SEND_BATCH records (a queue put
    per request woke the queue's feeder thread every time, ~7% of the server's samples).
    When the queue is full (the database is down or slow) records are dropped and counted.
    `close()` sends and writes what is left (the service calls it at shutdown)."""

    def __init__(self, store: ExperimentStore, capacity: int = 100_000) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self.queue: Any = context.Queue(max(1, capacity // SEND_BATCH))  # of batches
        self.dropped = 0
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._process = context.Process(
            target=write_exposures, args=(store.url, self.queue), name="exposure-log", daemon=True
        )
        self._process.start()
        self._flusher = threading.Thread(
            target=self._flush_loop, name="exposure-flush", daemon=True
        )
        self._flusher.start()

    def impression(
        self,
        request_id: str,
        user_id: int,
        assignment: Assignment | None,
        model_version: str | None,
        index_version: str | None,
        account_ids: list[int],
    ) -> None:
        self._put(
            "impression",
            {
                "request_id": request_id,
                "ts": dt.datetime.now(dt.UTC),
                "user_id": int(user_id),
                "experiment": assignment.experiment if assignment else None,
                "arm": assignment.arm.name if assignment else None,
                "model_version": model_version,
                "index_version": index_version,
                "account_ids": json.dumps(account_ids),
            },
        )

    def event(self, user_id: int, kind: str, account_id: int) -> None:
        self._put(
            "event",
            {
                "ts": dt.datetime.now(dt.UTC),
                "user_id": int(user_id),
                "type": kind,
                "account_id": int(account_id),
            },
        )

    def _put(self, kind: str, row: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append((kind, row))
            full = len(self._pending) >= SEND_BATCH
        if full:
            self._wake.set()

    def _flush_loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self._send()

    def _send(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self.queue.put_nowait(batch)
        except queue.Full:
            self.dropped += len(batch)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything pending and queued, then stop the writer."""
        self._closing.set()
        self._wake.set()
        self._flusher.join(timeout)
        self._send()
        self.queue.put(None)
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()


def write_exposures(url: str, records: Any) -> None:
    """The writer process: reads batches of records, inserts at most BATCH records at a
    time, at least every FLUSH_SECONDS, until it reads None."""
    store = ExperimentStore(url)
    stop = False
    while not stop:
        rows: list[tuple[str, dict[str, Any]]] = []
        try:
            sent = records.get(timeout=FLUSH_SECONDS)
            while True:
                if sent is None:
                    stop = True
                    break
                rows.extend(sent)
                if len(rows) >= BATCH:
                    break
                sent = records.get_nowait()
        except queue.Empty:
            pass
        if not rows:
            continue
        try:
            store.log_impressions([r for kind, r in rows if kind == "impression"])
            store.log_events([r for kind, r in rows if kind == "event"])
        except Exception:
            log.exception("exposure log write failed", extra={"fields": {"rows": len(rows)}})


class Experiments:
    """The running experiment (reread every `poll_seconds`) and the blend table."""

    def __init__(self, store: ExperimentStore, run_dir: Path) -> None:
        self.store = store
        self.blend_path = Path(run_dir) / "experiments" / BLEND_FILE
        self._blend: np.ndarray | None = None
        self.current: Experiment | None = None
        self.reload()

    def reload(self) -> Experiment | None:
        try:
            live = self.store.live()
        except Exception:  # keep the last definition when the store blips
            log.exception("could not read the experiment definitions")
            return self.current
        if (live and live.name) != (self.current and self.current.name):
            self._blend = None  # a new experiment may have rewritten the blend table
        self.current = live
        return self.current

    def assign(self, user_id: int) -> Assignment | None:
        exp = self.current
        if exp is None:
            return None
        return Assignment(exp.name, exp.arm_for(user_id))

    def blend(self, user_id: int) -> np.ndarray:
        """The user's precomputed blend list (ids, -1 padded); empty for unknown users."""
        if self._blend is None:
            self._blend = np.load(self.blend_path, mmap_mode="r")
        if 0 <= user_id < len(self._blend):
            return np.asarray(self._blend[user_id])
        return np.empty(0, dtype=np.int64)
