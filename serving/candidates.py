"""The inference path: the `champion` from the MLflow registry with its published FAISS
index (a *pair*, swapped as one), users' online features from Feast, filters (self,
followed, blocked, removed) and an optional re-rank (popularity discount, diversity)."""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from followrec.core.errors import InputError
from followrec.core.limits import MAX_K
from followrec.core.metrics import popularity_percentile
from followrec.features import feast_definitions as definitions
from followrec.features import feature_store
from followrec.features.transforms import apply_user_event, follow_count_bucket
from followrec.serving.cache import ResultCache
from followrec.serving.moderation import Moderation
from followrec.serving.rerank import discount, mmr
from followrec.serving.shared import Generations, WorkerLock
from followrec.training.model_io import load_model_dir
from followrec.training.numpy_tower import NumpyTower
from followrec.training.train import TrainedModel

log = logging.getLogger("followrec.serving")

RERANK_POOL = 3  # a re-rank chooses k from this many times k retrieved candidates
EVENT_TYPES = ("follow", "unfollow", "engagement", "block", "unblock")


class PairRefused(Exception):
    """A champion/index pair that must not serve; the reason is logged and shown."""


@dataclass(frozen=True)
class Options:
    """Per-request knobs (hashable: part of the cache key)."""

    k: int = 100
    popularity_discount: float = 0.0
    diversity: float = 0.0

    def check(self) -> None:
        """Raise naming the first out-of-range knob."""
        if not 1 <= self.k <= MAX_K:
            raise InputError(f"must be between 1 and {MAX_K}", field="k", value=self.k)
        for name in ("popularity_discount", "diversity"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError("must be between 0 and 1", field=name, value=value)

    @property
    def reranks(self) -> bool:
        return self.popularity_discount > 0 or self.diversity > 0


class AccountRows:
    """Account id -> index row by binary search. Read-only arrays, so requests racing on a
    fresh pair after a swap need no lock (a pandas Index builds its hash table lazily and
    not thread-safely), and a few dozen ids take microseconds."""

    def __init__(self, account_ids: np.ndarray) -> None:
        order = np.argsort(account_ids, kind="stable")
        self.sorted_ids = np.ascontiguousarray(np.asarray(account_ids)[order])
        self.sorted_rows = order

    def of(self, account_ids: np.ndarray) -> np.ndarray:
        """Index rows of these accounts, sorted and unique; accounts not indexed are left out."""
        if not len(self.sorted_ids) or not len(account_ids):
            return np.empty(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.sorted_ids, account_ids), len(self.sorted_ids) - 1)
        return np.unique(self.sorted_rows[pos[self.sorted_ids[pos] == account_ids]])


@dataclass
class Pair:
    """A model and the index built from it: they serve together or not at all."""

    model_version: str
    index_version: str
    trained: TrainedModel
    index: Any
    account_ids: np.ndarray
    percentile: np.ndarray  # follower-count percentile by index row
    service: Any  # the Feast FeatureService the consumer tower reads

    rows: AccountRows = field(init=False, repr=False)
    query_tower: NumpyTower = field(init=False, repr=False)

    def __post_init__(self) -> None:
        trained = self.trained
        self.query_tower = NumpyTower(
            trained.model.consumer,
            trained.schema["consumer"],
            trained.dense_stats["consumer"],
            trained.train_config["max_history"],
            trained.n_ids,
        )
        self.rows = AccountRows(self.account_ids)

    @property
    def versions(self) -> tuple[str, str]:
        return (self.model_version, self.index_version)


@dataclass
class Candidates:
    """Account ids with scores, and what produced them."""

    user_id: int | None
    account_ids: list[int]
    scores: list[float]
    retrieval_scores: list[float]
    model_version: str
    index_version: str
    cold_start: bool
    seconds: dict[str, float]
    cached: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of a candidates response."""
        return {
            "user_id": self.user_id,
            "candidates": [
                {"account_id": a, "score": round(s, 6), "retrieval_score": round(r, 6)}
                for a, s, r in zip(self.account_ids, self.scores, self.retrieval_scores)
            ],
            "model_version": self.model_version,
            "index_version": self.index_version,
            "cold_start": self.cold_start,
            "cached": self.cached,
            "latency_ms": {k: round(v * 1000, 3) for k, v in self.seconds.items()},
            "warnings": self.warnings,
        }


class Recommender:
    """Serves one run's champion. Thread-safe: a request takes the current pair once and
    finishes on it, while `refresh()` may swap in a new pair for later requests."""

    def __init__(
        self,
        run_dir: str | Path,
        cfg: Any,
        cache_size: int = 0,
        cold_start_max_follows: int = 3,
        generations: Generations | None = None,
        event_lock: WorkerLock | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.cold_start_max_follows = cold_start_max_follows
        self.cache = ResultCache(cache_size, generations)
        self.store = feature_store.open_store(self.run_dir / "feast")
        self.consumer_schema = pq.read_schema(self.run_dir / "features" / "consumer.parquet")
        self._swap_lock = threading.Lock()
        # Events rewrite a user's online row: one writer at a time, across the workers too.
        self._event_lock = event_lock or WorkerLock()
        self.last_refusal: str | None = None
        self.swaps = 0
        champion, index_version = self.published_versions()
        if champion is None:
            raise InputError("no champion in the registry: run the training DAG first")
        try:
            self.pair = self.load_pair(champion, index_version)
        except PairRefused as exc:
            raise InputError(str(exc), field="champion", value=champion) from None
        # Made only once a champion serves: a failed start leaves nothing behind.
        self.moderation = Moderation(self.run_dir / "serving" / "moderation.db")
        self._new_users: set[int] = set()  # created by events; bounded by max_new_users
        self._arm_pairs: dict[str, Pair] = {}  # experiment arms' versions other than champion

    # ------------------------------------------------------------------ pair and swap

    def _client(self):  # noqa: ANN202 - an MlflowClient
        from followrec.registry import promote

        return promote.client_for(self.cfg, self.run_dir)

    def published_versions(self) -> tuple[str | None, str | None]:
        """The champion alias's version and its index version (the version's `index.version`
        tag), right now: both come from the registry, never from a folder of this host."""
        from followrec.registry.aliases import CHAMPION, alias_version

        champion = alias_version(self._client(), CHAMPION)
        if champion is None:
            return (None, None)
        return (str(champion.version), champion.tags.get("index.version"))

    def load_pair(self, model_version: str, index_version: str | None) -> Pair:
        """Load and check a pair; PairRefused names why it may not serve."""
        from followrec.indexing.store import load_version, model_version_of
        from followrec.registry.promote import local_index

        if index_version is None:
            raise PairRefused("no index has been published")
        if model_version_of(index_version) != model_version:
            raise PairRefused(
                f"published index {index_version} was not built for champion v{model_version} "
                "(a promotion or rollback is in progress)"
            )
        model_dir = self._model_dir(model_version)
        schema = json.loads((model_dir / "model.json").read_text())["schema"]
        root = local_index(self.cfg, self.run_dir, model_version, index_version)
        index, account_ids, manifest = load_version(root, index_version)
        if manifest["schema_hash"] != schema["hash"]:
            raise PairRefused(
                f"index {index_version} has schema {manifest['schema_hash']}, "
                f"model v{model_version} has {schema['hash']}"
            )
        service = self.store.get_feature_service(
            feature_store.read_manifest(self.run_dir / "features")["services"]["consumer"],
            allow_cache=False,
        )
        online = {f.name for p in service.feature_view_projections for f in p.features}
        missing = [f["name"] for f in schema["consumer"] if f["name"] not in online]
        if missing:
            raise PairRefused(
                f"model v{model_version} (schema {schema['hash']}) needs consumer "
                f"features the online service {service.name} lacks: {', '.join(missing)}"
            )
        trained = load_model_dir(model_dir)
        return Pair(
            model_version=model_version,
            index_version=index_version,
            trained=trained,
            index=index,
            account_ids=account_ids,
            percentile=self._percentiles(account_ids),
            service=service,
        )

    def _model_dir(self, version: str) -> Path:
        """The registered version's weights, downloaded once from the MLflow registry."""
        from followrec.registry.aliases import registered_model_dir

        return registered_model_dir(self._client(), version, self.run_dir / "registered")

    def _percentiles(self, account_ids: np.ndarray) -> np.ndarray:
        producer = pd.read_parquet(
            self.run_dir / "features" / "producer.parquet", columns=["account_id", "follower_count"]
        )
        counts = producer.set_index("account_id")["follower_count"].reindex(account_ids).fillna(0)
        return popularity_percentile(counts.to_numpy())

    def refresh(self) -> dict[str, Any]:
        """Poll the registry and the index pointer; swap in a new pair when they moved and
        the pair passes its checks. Returns what happened."""
        with self._swap_lock:
            current = self.pair
            try:
                champion, index_version = self.published_versions()
            except Exception as exc:  # registry unreachable: keep serving
                return self._refused(current, f"cannot read the registry: {exc}")
            if champion is None:
                return self._refused(current, "the registry has no champion")
            if (champion, index_version) == current.versions:
                return {"swapped": False, "serving": list(current.versions)}
            try:
                new = self.load_pair(champion, index_version)
            except PairRefused as exc:
                return self._refused(current, str(exc))
            except Exception as exc:  # a broken artifact must not take the service down
                return self._refused(current, f"{type(exc).__name__}: {exc}")
            self.pair = new  # one reference assignment: requests see the old or the new pair
            self.cache.clear()
            self.swaps += 1
            self.last_refusal = None
            log.info(
                "swapped",
                extra={"fields": {"from": list(current.versions), "to": list(new.versions)}},
            )
            return {"swapped": True, "from": list(current.versions), "serving": list(new.versions)}

    def _refused(self, current: Pair, reason: str) -> dict[str, Any]:
        if reason != self.last_refusal:
            log.warning(
                "swap refused",
                extra={"fields": {"reason": reason, "serving": list(current.versions)}},
            )
        self.last_refusal = reason
        return {"swapped": False, "refused": reason, "serving": list(current.versions)}

    # ------------------------------------------------------------------ features

    def online_row(self, user_id: int, pair: Pair | None = None) -> tuple[dict[str, Any], bool]:
        """The user's online consumer features (name -> value, None where missing) and
        whether the store knows the user. A dict, not a DataFrame: building and testing a
        one-row frame cost more than the Feast read itself."""
        pair = pair or self.pair
        key = definitions.KEYS["consumer"]
        response = self.store.get_online_features(
            features=pair.service, entity_rows=[{key: int(user_id)}]
        )
        row = {name: values[0] for name, values in response.to_dict().items()}
        known = any(value is not None for name, value in row.items() if name != key)
        return row, known

    # ------------------------------------------------------------------ candidates

    def pair_for(self, model_version: str) -> Pair:
        """The champion's pair, or another registered version with its own index (an
        experiment arm); loaded once and kept."""
        from followrec.indexing.store import version_name

        pair = self.pair
        if pair.model_version == model_version:
            return pair
        with self._swap_lock:
            if model_version not in self._arm_pairs:
                try:
                    self._arm_pairs[model_version] = self.load_pair(
                        model_version, version_name(model_version)
                    )
                    settle_heap()
                except (PairRefused, InputError, FileNotFoundError) as exc:
                    raise InputError(
                        f"the experiment arm's model cannot serve: {exc}",
                        field="arm",
                        value=f"v{model_version}",
                    ) from None
            return self._arm_pairs[model_version]

    def recommend(
        self, user_id: int, options: Options | int = 100, pair: Pair | None = None
    ) -> Candidates:
        """Top k for a user by id; an unknown user is served as a cold start."""
        options = Options(k=options) if isinstance(options, int) else options
        options.check()
        pair = pair or self.pair
        started = time.perf_counter()
        cached = self.cache.get(user_id, (options, pair.versions))
        if cached is not None:
            return replace(cached, cached=True, seconds={"total": time.perf_counter() - started})
        generation = self.cache.generation(user_id)  # before the row: an event may come during
        row, known = self.online_row(user_id, pair)
        fetched = time.perf_counter()
        follows = _bag(row, "follows")
        cold = not known or len(follows) <= self.cold_start_max_follows
        out = self._rank(pair, row, user_id, follows, options, cold, fetched - started)
        if not known:
            out.warnings = [
                f"user {user_id} is unknown to the online feature store: "
                "served as a cold start (popular accounts for an empty profile)"
            ]
        self.cache.put(user_id, (options, pair.versions), out, generation)
        return out

    def recommend_list(self, user_id: int, ranked: np.ndarray, options: Options) -> Candidates:
        """Serve a precomputed ranked list (the legacy blend arm) through the same filters:
        what the user follows now, blocked and removed accounts, the user."""
        options.check()
        started = time.perf_counter()
        row, _ = self.online_row(user_id)
        excluded = self._excluded(user_id, _bag(row, "follows"))
        kept = [int(a) for a in ranked if a >= 0 and int(a) not in excluded][: options.k]
        seconds = time.perf_counter() - started
        return Candidates(
            user_id=user_id,
            account_ids=kept,
            scores=[1.0 / (1 + i) for i in range(len(kept))],
            retrieval_scores=[1.0 / (1 + i) for i in range(len(kept))],
            model_version="blend",
            index_version="blend",
            cold_start=False,
            seconds={"features": seconds, "total": seconds},
        )

    def recommend_profile(self, profile: dict[str, Any], options: Options) -> Candidates:
        """Top k for an onboarding profile (language, country, interests, follows), merged
        over the user's online features when a known user_id is given."""
        options.check()
        pair = self.pair
        started = time.perf_counter()
        user_id = profile.get("user_id")
        key = definitions.KEYS["consumer"]
        row: dict[str, Any] = {key: -1}
        if user_id is not None:
            row, _ = self.online_row(user_id, pair)
        warnings: list[str] = []
        vocab = pair.trained.vocabularies
        for name in ("language", "country"):
            value = profile.get(name)
            if value is None:
                continue
            values = vocab.get(name, [])
            if value not in values:
                warnings.append(f"{name} {value!r} is unknown to the model; treated as unknown")
            row[name] = values.index(value) if value in values else 0
        n_ids = pair.trained.n_ids
        if profile.get("interests") is not None:
            row["topics"] = _checked_ids(profile["interests"], n_ids["topics"], "interests")
        follows = _bag(row, "follows")
        if profile.get("follows") is not None:
            follows = _checked_ids(profile["follows"], n_ids["accounts"], "follows")
            row["follows"] = follows
            row["recent_follows"] = follows[: self.cfg.features.recent_follows]
            row["follow_count_bucket"] = int(follow_count_bucket(np.array([len(follows)]))[0])
        cold = len(follows) <= self.cold_start_max_follows
        fetched = time.perf_counter()
        out = self._rank(pair, row, user_id, follows, options, cold, fetched - started)
        out.warnings = warnings
        return out

    def _excluded(self, user_id: int | None, follows: np.ndarray) -> set[int]:
        """What no list may show: accounts the user follows, removed accounts, the user and
        the accounts they blocked."""
        excluded = set(follows.tolist()) | self.moderation.removed()
        if user_id is not None:
            excluded |= {int(user_id)} | self.moderation.blocked(int(user_id))
        return excluded

    def _rank(
        self,
        pair: Pair,
        row: dict[str, Any],
        user_id: int | None,
        follows: np.ndarray,
        options: Options,
        cold: bool,
        feature_seconds: float,
    ) -> Candidates:
        t0 = time.perf_counter()
        query = pair.query_tower.embed(row)[None, :]
        t1 = time.perf_counter()
        excluded = self._excluded(user_id, follows)
        want = options.k * (RERANK_POOL if options.reranks else 1)
        rows, scores = search_one_excluding(pair, query, want, excluded)
        t2 = time.perf_counter()
        final = scores.astype(np.float64)
        order = np.arange(len(rows))
        if options.popularity_discount > 0:
            final = discount(scores, pair.percentile[rows], options.popularity_discount)
            order = np.argsort(-final, kind="stable")
        if options.diversity > 0:
            order = mmr(final, vectors_of(pair.index, rows), options.k, options.diversity)
        order = order[: options.k]
        t3 = time.perf_counter()
        return Candidates(
            user_id=user_id,
            account_ids=[int(a) for a in pair.account_ids[rows[order]]],
            scores=[float(s) for s in final[order]],
            retrieval_scores=[float(s) for s in scores[order]],
            model_version=pair.model_version,
            index_version=pair.index_version,
            cold_start=cold,
            seconds={
                "features": feature_seconds,
                "tower": t1 - t0,
                "search": t2 - t1,
                "rerank": t3 - t2,
                "total": feature_seconds + t3 - t0,
            },
        )

    # ------------------------------------------------------------------ events

    def apply_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """A follow, unfollow or engagement rewrites the user's online row through the
        Feast push source; block/unblock change the user's filter. The user's cached
        results are retired either way."""
        kind = event["type"]
        user_id, account_id = int(event["user_id"]), int(event["account_id"])
        if kind not in EVENT_TYPES:
            raise InputError(f"expected one of {', '.join(EVENT_TYPES)}", field="type", value=kind)
        pair = self.pair
        if not 0 <= account_id < pair.trained.n_ids["accounts"]:
            raise InputError("unknown account", field="account_id", value=account_id)
        if kind in ("block", "unblock"):
            self.moderation.set_blocked(user_id, account_id, kind == "block")
            self.cache.invalidate(user_id)
            return {"user_id": user_id, "type": kind, "account_id": account_id}
        with self._event_lock.held():  # read-modify-write of one row
            online, known = self.online_row(user_id, pair)
            if not known and user_id not in self._new_users:
                limit = self.cfg.serving.max_new_users
                if len(self._new_users) >= limit:
                    raise InputError(
                        f"unknown user, and this process already created {limit} new users "
                        "(serving.max_new_users); they arrive with the next feature snapshot",
                        field="user_id",
                        value=user_id,
                    )
                self._new_users.add(user_id)
            row = self._complete_row(online)
            apply_user_event(row, kind, account_id, event.get("kind"), self.cfg.features)
            row[definitions.TIMESTAMP] = pd.Timestamp.now(tz="UTC")
            from feast.data_source import PushMode

            self.store.push(definitions.PUSH_SOURCE, row, to=PushMode.ONLINE)
        self.cache.invalidate(user_id)
        return {
            "user_id": user_id,
            "type": kind,
            "account_id": account_id,
            "follow_count": int(row["follow_count"].iloc[0]),
        }

    def _complete_row(self, online: dict[str, Any]) -> pd.DataFrame:
        """Every column of the consumer view, nulls (a new user) as empty values."""
        row = {}
        for f in self.consumer_schema:
            if f.name == definitions.TIMESTAMP:
                continue
            value = online.get(f.name)
            is_list = str(f.type).startswith(("list", "large_list"))
            if is_list:
                row[f.name] = [[int(v) for v in (value if value is not None else [])]]
            elif value is None or (isinstance(value, float) and np.isnan(value)):
                row[f.name] = [0]
            else:
                row[f.name] = [value]
        return pd.DataFrame(row)

    def ready(self) -> dict[str, Any]:
        """What /readyz reports; raises when the online store cannot be read."""
        pair = self.pair
        self.online_row(0, pair)
        return {
            "model_version": pair.model_version,
            "index_version": pair.index_version,
            "producers": int(pair.index.ntotal),
            "feature_service": pair.service.name,
            "last_refusal": self.last_refusal,
        }


def search_one_excluding(
    pair: Pair, query: np.ndarray, want: int, excluded: set[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Index rows and scores of the best `want` accounts not excluded."""
    # One query per request: OpenMP inside FAISS only oversubscribes the cores that other
    # requests use (0.36 ms on two threads, 0.19 ms on one, for 34k producers). The setting
    # is per thread, and requests run on the server's worker threads.
    faiss.omp_set_num_threads(1)
    total = pair.index.ntotal
    banned = pair.rows.of(np.fromiter(excluded, np.int64, len(excluded)))
    # As core.search.search_excluding, for one query without its sparse-matrix set-up
    # (a third of this stage's time): deep enough that `want` remain even when every
    # excluded account ranks first, deeper only while an approximate index falls short.
    depth = int(min(total, want + len(banned) + 1))
    while True:
        scores, found = pair.index.search(np.ascontiguousarray(query), depth)
        scores, found = scores[0], found[0].astype(np.int64)
        keep = found >= 0
        keep[keep] = ~np.isin(found[keep], banned)
        if depth >= total or keep.sum() >= want:
            break
        depth = min(total, depth * 2)
    return found[keep][:want], scores[keep][:want].astype(np.float32)


def settle_heap() -> None:
    """Collect once, then freeze what survives, so that later collections skip it. The
    model, the index wrapper and the Feast and MLflow clients are ~500k objects: a full
    collection walked them all and paused every request for ~260 ms, about once in 3,000
    requests (gc callbacks, in process). Unfrozen first, so that a pair swapped out can go.
    Called when a champion loads or swaps in, and when an experiment arm's pair loads."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def vectors_of(index: Any, rows: np.ndarray | None = None) -> np.ndarray:
    """Stored producer vectors of these index rows (default: every row)."""
    if isinstance(index, faiss.IndexIVF):
        index.make_direct_map()  # IVF lists keep no row -> vector map until asked
    if rows is None:
        return index.reconstruct_n(0, index.ntotal)
    return index.reconstruct_batch(np.asarray(rows, dtype=np.int64))


def _bag(row: dict[str, Any], name: str) -> np.ndarray:
    value = row.get(name)
    return np.asarray(value if value is not None else [], dtype=np.int64)


def _checked_ids(values: list[int], size: int, name: str) -> np.ndarray:
    ids = np.asarray(values, dtype=np.int64)
    bad = ids[(ids < 0) | (ids >= size)]
    if len(bad):
        raise InputError(f"ids must be in [0, {size})", field=name, value=int(bad[0]))
    return ids
