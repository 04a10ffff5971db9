"""Service metrics in the Prometheus text format (version 0.0.4): request latency
histograms, per-stage time, cache hits, swaps, events and the versions being served."""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters and histograms; `render()` is what /metrics returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[tuple, list[float]] = {}
        self._hist_sums: dict[tuple, float] = defaultdict(float)
        self._stage_sums: dict[str, float] = defaultdict(float)
        self._stage_counts: dict[str, int] = defaultdict(int)
        self.served: tuple[str, str] | None = None

    def count(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add to a counter (created at zero)."""
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += amount

    def counter(self, name: str, **labels: str) -> float:
        """A counter's current value."""
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def observe_request(self, route: str, seconds: float) -> None:
        """One request's latency into the route's histogram."""
        key = (("route", route),)
        with self._lock:
            buckets = self._histograms.setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 1))
            buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._hist_sums[key] += seconds

    def observe_stages(self, seconds: dict[str, float]) -> None:
        """Time spent in each stage of one request (features, tower, search, rerank)."""
        with self._lock:
            for stage, value in seconds.items():
                self._stage_sums[stage] += value
                self._stage_counts[stage] += 1

    def snapshot(self) -> dict:
        """Everything counted so far, as JSON-able lists (what a worker shares)."""
        with self._lock:
            return {
                "counters": [
                    [name, [list(pair) for pair in labels], value]
                    for name, values in self._counters.items()
                    for labels, value in values.items()
                ],
                "histograms": [
                    [[list(pair) for pair in key], list(buckets), self._hist_sums[key]]
                    for key, buckets in self._histograms.items()
                ],
                "stages": {
                    stage: [self._stage_sums[stage], self._stage_counts[stage]]
                    for stage in self._stage_sums
                },
            }

    def render(self, others: Sequence[dict] = ()) -> str:
        """The Prometheus exposition text: this process's counts plus the `others`
        snapshots (the service's other workers)."""
        counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        histograms: dict[tuple, list[float]] = {}
        sums: dict[tuple, float] = defaultdict(float)
        stage_sums: dict[str, float] = defaultdict(float)
        stage_counts: dict[str, float] = defaultdict(float)
        for snap in [self.snapshot(), *others]:
            for name, labels, value in snap["counters"]:
                counters[name][tuple(tuple(pair) for pair in labels)] += value
            for key, buckets, total in snap["histograms"]:
                key = tuple(tuple(pair) for pair in key)
                into = histograms.setdefault(key, [0.0] * len(buckets))
                histograms[key] = [a + b for a, b in zip(into, buckets, strict=True)]
                sums[key] += total
            for stage, (total, count) in snap["stages"].items():
                stage_sums[stage] += total
                stage_counts[stage] += count
        served = self.served
        hits = counters["followrec_cache_hits_total"].get((), 0.0)
        misses = counters["followrec_cache_misses_total"].get((), 0.0)
        hit_rate = hits / (hits + misses) if hits + misses else 0.0
        counters = {name: values for name, values in counters.items() if values}
        lines: list[str] = []
        for name in sorted(counters):
            lines.append(f"# TYPE {name} counter")
            for labels, value in sorted(counters[name].items()):
                lines.append(f"{name}{_labels(labels)} {value:g}")
        lines.append("# HELP followrec_request_seconds Request latency by route.")
        lines.append("# TYPE followrec_request_seconds histogram")
        for key, buckets in sorted(histograms.items()):
            cumulative = 0.0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(
                    f"followrec_request_seconds_bucket{_labels((*key, ('le', le)))} {cumulative:g}"
                )
            lines.append(f"followrec_request_seconds_sum{_labels(key)} {sums[key]:.6f}")
            lines.append(f"followrec_request_seconds_count{_labels(key)} {cumulative:g}")
        lines.append("# HELP followrec_stage_seconds Time in each stage of a candidates request.")
        lines.append("# TYPE followrec_stage_seconds summary")
        for stage in sorted(stage_sums):
            label = _labels((("stage", stage),))
            lines.append(f"followrec_stage_seconds_sum{label} {stage_sums[stage]:.6f}")
            lines.append(f"followrec_stage_seconds_count{label} {stage_counts[stage]:g}")
        lines.append("# TYPE followrec_cache_hit_ratio gauge")
        lines.append(f"followrec_cache_hit_ratio {hit_rate:.6f}")
        lines.append("# HELP followrec_serving_info The model and index versions being served.")
        lines.append("# TYPE followrec_serving_info gauge")
        if served is not None:
            pairs = (("model_version", served[0]), ("index_version", served[1]))
            lines.append(f"followrec_serving_info{_labels(pairs)} 1")
        return "\n".join(lines) + "\n"


class SharedMetrics:
    """Metrics across a service's worker processes: each worker writes its snapshot to
    FOLDER/<pid>.json every `seconds` (and when it stops); /metrics adds the other
    workers' latest snapshots to its own counts."""

    def __init__(self, folder: str | Path, metrics: Metrics, seconds: float = 1.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.metrics = metrics
        self.seconds = seconds
        self.own = self.folder / f"{os.getpid()}.json"

    def write(self) -> None:
        partial = self.own.with_suffix(".part")
        partial.write_text(json.dumps(self.metrics.snapshot()))
        partial.replace(self.own)  # readers see the previous snapshot or this one, whole

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.seconds):
            self.write()
        self.write()

    def others(self) -> list[dict]:
        snapshots = []
        for path in self.folder.glob("*.json"):
            if path != self.own:
                with contextlib.suppress(OSError, ValueError):  # a worker that never wrote
                    snapshots.append(json.loads(path.read_text()))
        return snapshots

    def render(self) -> str:
        return self.metrics.render(self.others())
