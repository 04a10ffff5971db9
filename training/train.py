"""The training loop: pre-built tensors, seeded and deterministic, early stopping on
validation Recall@100, checkpoint every epoch and resume after a kill."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from followrec.core.atomic import atomic_file
from followrec.core.config import Config, SplitConfig, TrainConfig, require
from followrec.core.errors import InputError
from followrec.core.metrics import mean_recall
from followrec.core.search import exclusions, search_excluding, sorted_unique
from followrec.features.contract import Dataset
from followrec.features.ingest import training_features
from followrec.features.spec import TowerSpec, build_schema, load_spec
from followrec.features.split import Split, per_user_holdout
from followrec.features.transforms import FeatureTables, build_features
from followrec.training.data import TowerTensors, fit_dense_stats, tower_tensors
from followrec.training.id_rows import RowAdam, touch_rows
from followrec.training.objectives import (
    FollowIndex,
    in_batch_softmax,
    pointwise_logistic,
    sampling_log_q,
)
from followrec.training.towers import TwoTower, TwoTowerEnsemble

log = logging.getLogger(__name__)
HISTORY_BAGS = ("follows", "recent_follows")
# Producer bags of the accounts that follow it: the training user is left out of its target's.
FOLLOWER_BAGS = ("followers",)
OWN_ID = "account_id"  # the producer's own id, a one-id bag
AUTO_EPOCHS = 8  # epochs when train.epochs is left to auto
MAX_EPOCHS = 200  # bound on the extra epochs small graphs get from min_steps
SPARSE_IDS_ABOVE = 200_000  # accounts; below it dense Adam on the id tables is faster
OBJECTIVES = ("in_batch", "pointwise")
ID_UPDATES = ("auto", "rows", "always", "never")  # train.sparse_ids
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainedModel:
    """A trained two-tower model and everything needed to feed it the same features."""

    model: TwoTower | TwoTowerEnsemble
    schema: dict[str, Any]
    vocabularies: dict[str, list[str]]
    dense_stats: dict[str, dict[str, list[float]]]
    spec: dict[str, Any]
    train_config: dict[str, Any]
    n_ids: dict[str, int]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # the whole fit: steps, validation and checkpoints
    examples_per_second: float = 0.0  # training steps only
    refit: dict[str, Any] | None = None  # the fit on every training follow (see _refit)

    @property
    def members(self) -> int:
        """Towers per side: 1, or the ensemble's members."""
        return len(self.model.members) if isinstance(self.model, TwoTowerEnsemble) else 1

    @property
    def dimension(self) -> int:
        """Width of the embeddings both sides produce (what an index holds)."""
        return self.members * int(self.train_config["output_dim"])

    def tensors(self, tables: FeatureTables) -> tuple[TowerTensors, TowerTensors]:
        """Consumer and producer tensors for feature tables, with the fitted statistics."""
        limit, rows = self.train_config["max_history"], self.n_ids
        return (
            tower_tensors(
                tables.consumer, self.schema["consumer"], self.dense_stats["consumer"], limit, rows
            ),
            tower_tensors(
                tables.producer, self.schema["producer"], self.dense_stats["producer"], limit, rows
            ),
        )


def check_train_config(cfg: TrainConfig) -> None:
    """Fail naming the setting when a value cannot work."""
    checks = {
        "train.objective": cfg.objective in OBJECTIVES,
        "train.batch_size": cfg.batch_size >= 2,
        "train.epochs": cfg.epochs is None or cfg.epochs >= 1,
        "train.learning_rate": cfg.learning_rate > 0,
        "train.temperature": cfg.temperature > 0,
        "train.logq_weight": cfg.logq_weight >= 0,
        "train.history_dropout": 0 <= cfg.history_dropout < 1,
        "train.item_dropout": 0 <= cfg.item_dropout < 1,
        "train.new_account_dropout": 0 <= cfg.new_account_dropout < 1,
        "train.validation_fraction": 0 < cfg.validation_fraction < 1,
        "train.validation_users": cfg.validation_users >= 1,
        "train.refit_above": cfg.refit_above >= 0,
        "train.mixed_negatives": cfg.mixed_negatives >= 0,
        "train.pointwise_negatives": cfg.pointwise_negatives >= 1,
        "train.sparse_ids": cfg.sparse_ids in ID_UPDATES,
        "train.precision": cfg.precision in PRECISIONS,
    }
    require(checks, cfg, "invalid value")


@torch.no_grad()
def encode(
    tower: torch.nn.Module, tensors: TowerTensors, rows: np.ndarray | None = None, batch: int = 8192
) -> torch.Tensor:
    """Embeddings of `rows` (default: every row), in batches, without gradients."""
    if rows is None:
        rows = np.arange(tensors.n_rows)
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    was_training = tower.training
    tower.eval()
    parts = [tower(tensors.batch(rows_t[lo : lo + batch])) for lo in range(0, len(rows_t), batch)]
    tower.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0)


def exact_top_k(
    user_emb: torch.Tensor, item_emb: torch.Tensor, users: np.ndarray, exclude: FollowIndex, k: int
) -> np.ndarray:
    """Exact inner-product top k per user, minus the user and accounts they follow."""
    follows = exclude.csr()

    def search(queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        top = torch.topk(torch.from_numpy(queries) @ item_emb.T, depth, dim=1)
        return top.values.numpy(), top.indices.numpy()

    out = np.empty((len(users), k), dtype=np.int64)
    chunk = max(8, int(2e7 // max(item_emb.shape[0], 1)))  # ~80 MB of scores at a time
    for lo in range(0, len(users), chunk):
        u = users[lo : lo + chunk]
        out[lo : lo + len(u)] = search_excluding(
            search, user_emb[lo : lo + chunk].numpy(), exclusions(follows, u), k, len(item_emb)
        )[0]
    return out


def config_hash(payload: dict[str, Any]) -> str:
    """Short hash of the settings a checkpoint must match to be resumed."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def _atomic_save(obj: Any, path: Path) -> None:
    # Streamed to the file: at 1M accounts an in-memory copy added a GB to the peak.
    with atomic_file(path) as fh:
        torch.save(obj, fh)


@dataclass
class TrainState:
    """Where a fit stands; saved in every checkpoint (as plain data) and resumed from."""

    epoch: int = 0
    step: int = 0
    best_metric: float = -1.0
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class FitData:
    """The fit follows as tensors, their negatives' distribution, and the validation users."""

    users: torch.Tensor
    items: torch.Tensor
    follows: FollowIndex
    neg_p: torch.Tensor
    log_q: torch.Tensor | None
    val: Any  # the held-back follows (a DataFrame)
    val_users: np.ndarray


@contextmanager
def torch_settings(threads: int, seed: int) -> Iterator[None]:
    """Threads and a seeded RNG for one fit; the caller's settings come back afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(previous)


def train_two_tower(
    ds: Dataset,
    split: Split,
    cfg: Config,
    *,
    checkpoint: str | Path | None = None,
    spec: TowerSpec | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedModel:
    """Fit the towers on the split's training follows; a held-back slice of them is the
    validation set for early stopping. Resumes from `checkpoint` when it matches."""
    tc = cfg.train
    check_train_config(tc)
    with torch_settings(tc.threads, tc.seed):
        spec = spec or load_spec(tc.spec)
        val_mask = validation_holdout(split.train, tc)
        fit, val = split.train[~val_mask], split.train[val_mask]
        tables = build_features(
            ds.accounts, fit, split.train_engagements, cfg.features, ds.feature_kinds
        )
        trained = new_model(tables, spec, tc, ds.n_accounts)
        data = fit_data(fit, val, ds.n_accounts, tc)
        fingerprint = config_hash(
            {
                "train": asdict(tc),
                "spec": spec.to_dict(),
                "n": ds.n_accounts,
                "fit": len(fit),
                "schema": trained.schema["hash"],
            }
        )
        trained = _fit(trained, tables, data, tc, fingerprint, checkpoint, progress, on_epoch)
        if len(val) < tc.refit_above * len(split.train) or not trained.history:
            return trained
        return _refit(ds, split, cfg, spec, trained, progress)


def _refit(
    ds: Dataset, split: Split, cfg: Config, spec: TowerSpec, early: TrainedModel, progress: bool
) -> TrainedModel:
    """Fresh towers trained on every training follow, the held-back ones too, for the number
    of epochs early stopping chose (its best epoch); no validation is left to read. With
    train.refit_keeps_early the early-stopped towers stay as a second member (an ensemble)."""
    tc = cfg.train
    best_epoch = 1 + int(np.argmax([h["val_recall_at_100"] for h in early.history]))
    started = time.perf_counter()
    torch.manual_seed(tc.seed + 1)  # the same towers whether or not the first fit resumed
    tables = training_features(ds, split, cfg)
    trained = new_model(tables, spec, tc, ds.n_accounts)
    ensemble = (
        tc.refit_keeps_early
        and not tc.interaction_head  # a ranking head reads one model's embeddings
        and trained.schema["hash"] == early.schema["hash"]
        and trained.vocabularies == early.vocabularies
    )
    if ensemble:  # both members read features standardised alike
        trained.dense_stats = early.dense_stats
    elif tc.refit_keeps_early:
        log.info("the refit replaces the early towers: an interaction head, or other features")
    data = fit_data(split.train, split.train.iloc[:0], ds.n_accounts, tc)
    consumer_t, producer_t = trained.tensors(tables)
    world, _ = _world()
    step_module = _step_module(trained.model, world)
    optimizer = Optimizer(trained.model, tc, row_updates(tc, world, trained.n_ids["accounts"]))
    state = TrainState()
    losses: list[float] = []
    while state.epoch < best_epoch:
        losses, _ = _epoch(
            step_module, optimizer, consumer_t, producer_t, data, tc, state, progress
        )
        state.epoch += 1
    seconds = time.perf_counter() - started
    trained.model.eval()
    if ensemble:  # two models (other weights, other data) for the price of the refit
        trained.model = TwoTowerEnsemble([trained.model, early.model])
    trained.history = early.history
    trained.refit = {
        "epochs": best_epoch,
        "follows": len(split.train),
        "members": 2 if ensemble else 1,
        "last_epoch_loss": float(np.mean(losses)) if losses else None,
        "seconds": round(seconds, 1),
    }
    trained.seconds = early.seconds + seconds
    trained.examples_per_second = early.examples_per_second
    log.info("refit on all %d training follows: %s", len(split.train), trained.refit)
    return trained


def validation_holdout(follows: Any, tc: TrainConfig) -> np.ndarray:
    """Mask of the training follows held back for early stopping: tc.validation_fraction of
    the follows of tc.validation_users seeded users. Only those users are read, so the
    other users' follows all train (on the Twitch union 90% of what was held back)."""
    held = per_user_holdout(
        follows,
        SplitConfig(holdout_fraction=tc.validation_fraction, seed=tc.seed, min_user_follows=2),
    )
    users = follows["follower_id"].to_numpy()
    candidates = sorted_unique(users[held])
    chosen = np.random.default_rng(tc.seed).choice(
        candidates, size=min(tc.validation_users, len(candidates)), replace=False
    )
    return held & np.isin(users, chosen)


def new_model(tables: FeatureTables, spec: TowerSpec, tc: TrainConfig, n: int) -> TrainedModel:
    """An untrained two-tower model for these feature tables, with its fitted statistics."""
    schema = build_schema(spec, tables)
    n_topics = max(
        (
            f["cardinality"]
            for t in ("consumer", "producer")
            for f in schema[t]
            if f["kind"] == "id_bag" and f["ids"] == "topics"
        ),
        default=1,
    )
    n_ids = {"accounts": n, "topics": n_topics}
    sparse = tc.sparse_ids == "always" or (tc.sparse_ids == "auto" and n > SPARSE_IDS_ABOVE)
    model = TwoTower(
        schema,
        n_ids,
        tc.embedding_dim,
        tuple(tc.hidden),
        tc.output_dim,
        tc.temperature,
        tc.interaction_head,
        sparse,
    )
    return TrainedModel(
        model=model,
        schema=schema,
        vocabularies=tables.vocabularies,
        dense_stats={
            t: fit_dense_stats(getattr(tables, t), schema[t]) for t in ("consumer", "producer")
        },
        spec=spec.to_dict(),
        train_config=asdict(tc),
        n_ids=n_ids,
    )


def fit_data(fit: Any, val: Any, n: int, tc: TrainConfig) -> FitData:
    """Tensors of the fit follows, the negatives' distribution and the validation users."""
    users = torch.from_numpy(fit["follower_id"].to_numpy())
    items = torch.from_numpy(fit["followee_id"].to_numpy())
    counts = torch.bincount(items, minlength=n)
    neg_weight = (counts.double() + 1.0) ** tc.negative_exponent
    neg_p = (neg_weight / neg_weight.sum()).float()
    log_q = (
        tc.logq_weight * sampling_log_q(counts, tc.batch_size, tc.mixed_negatives, neg_p)
        if tc.logq_correction and tc.logq_weight > 0
        else None
    )
    # validation_holdout already chose which users validation reads: every user of `val`.
    val_users = sorted_unique(val["follower_id"].to_numpy())
    return FitData(users, items, FollowIndex(users, items, n), neg_p, log_q, val, val_users)


def _resume(
    ckpt: Path | None, fingerprint: str, model: TwoTower, optimizer: Optimizer
) -> TrainState:
    """The checkpoint's state when it was saved for these settings, else a fresh one."""
    if ckpt is None or not ckpt.exists():
        return TrainState()
    saved = torch.load(ckpt, weights_only=True)  # plain data only: never unpickle code
    if saved.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s is for other settings; starting afresh", ckpt)
        return TrainState()
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    state = TrainState(**saved["state"])
    log.info("resumed %s at epoch %d", ckpt, state.epoch)
    return state


def _fit(
    trained: TrainedModel,
    tables: FeatureTables,
    data: FitData,
    tc: TrainConfig,
    fingerprint: str,
    checkpoint: str | Path | None,
    progress: bool,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
) -> TrainedModel:
    """Epochs until tc.epochs (auto: see _more_epochs), tc.max_steps or tc.patience
    epochs without a better validation recall (see _patience_counts); the best epoch's
    weights are kept."""
    model = trained.model
    consumer_t, producer_t = trained.tensors(tables)
    world, rank = _world()
    step_module = _step_module(model, world)
    optimizer = Optimizer(model, tc, row_updates(tc, world, trained.n_ids["accounts"]))
    ckpt = Path(checkpoint) if checkpoint else None
    state = _resume(ckpt, fingerprint, model, optimizer)

    started = time.perf_counter()
    examples = 0
    step_seconds = 0.0
    while state.bad_epochs < tc.patience and _more_epochs(state, tc):
        epoch_started = time.perf_counter()
        losses, seen = _epoch(
            step_module, optimizer, consumer_t, producer_t, data, tc, state, progress
        )
        examples += seen
        step_seconds += time.perf_counter() - epoch_started
        user_emb = encode(model.consumer, consumer_t, data.val_users)
        item_emb = encode(model.producer, producer_t)
        recs = exact_top_k(user_emb, item_emb, data.val_users, data.follows, 100)
        metric = mean_recall(recs, data.val_users, data.val, trained.n_ids["accounts"])
        record = {
            "epoch": state.epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "val_recall_at_100": metric,
            "temperature": float(1 / model.inv_temperature.detach()),
        }
        state.history.append(record)
        if metric > state.best_metric:
            state.best_metric, state.bad_epochs = metric, 0
            state.best_state = copy.deepcopy(model.state_dict())
        elif _patience_counts(state, tc):
            state.bad_epochs += 1
        state.epoch += 1
        if on_epoch is not None:
            on_epoch(state.epoch, record)
        log.info("epoch %d: %s", state.epoch, record)
        if ckpt is not None and rank == 0:
            _atomic_save(
                {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    # Not asdict: it deep-copies the best weights.
                    "state": {f.name: getattr(state, f.name) for f in fields(state)},
                },
                ckpt,
            )
        if tc.max_steps is not None and state.step >= tc.max_steps:
            break
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    trained.history = state.history
    trained.seconds = time.perf_counter() - started
    trained.examples_per_second = examples / max(step_seconds, 1e-9)
    model.eval()
    return trained


def _step_module(model: TwoTower, world: int) -> torch.nn.Module:
    """The loss as a module; under torchrun every rank holds the whole model and DDP
    averages gradients over ranks."""
    if world == 1:
        return _StepLoss(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(_StepLoss(model), find_unused_parameters=True)


def _more_epochs(state: TrainState, tc: TrainConfig) -> bool:
    """Another epoch? An explicit tc.epochs is the count; auto runs AUTO_EPOCHS, then on
    while fewer than tc.min_steps steps were taken (a small graph's epoch is a few dozen
    steps: 8 of them left the towers under-trained on every Twitch language graph)."""
    if tc.epochs is not None:
        return state.epoch < tc.epochs
    return state.epoch < AUTO_EPOCHS or (state.step < tc.min_steps and state.epoch < MAX_EPOCHS)


def _patience_counts(state: TrainState, tc: TrainConfig) -> bool:
    """Does an epoch without a better validation recall count against tc.patience? Under
    auto epochs not before tc.min_steps steps: a small graph's validation recall can sit
    flat for several early epochs (RU: 4 epochs, ~280 steps, stopped at 0.433 of 0.50)."""
    return tc.epochs is not None or state.step >= tc.min_steps


def _epoch(
    step_module: torch.nn.Module,
    optimizer: Optimizer,
    consumer_t: TowerTensors,
    producer_t: TowerTensors,
    data: FitData,
    tc: TrainConfig,
    state: TrainState,
    progress: bool,
) -> tuple[list[float], int]:
    """One pass over the fit follows in a seeded order; each step's loss and the examples."""
    world, rank = _world()
    m = len(data.users)
    # One step takes world x batch_size examples: rank r reads the r-th slice of each.
    steps_per_epoch = m // (tc.batch_size * world) if world > 1 else -(-m // tc.batch_size)
    gen = torch.Generator().manual_seed(tc.seed * 1000 + state.epoch)
    perm = torch.randperm(m, generator=gen)
    if world > 1:  # same order on every rank, different sampled negatives
        gen.manual_seed(tc.seed * 1000 + state.epoch + 7919 * rank)
    losses: list[float] = []
    examples = 0
    bar = tqdm(
        range(steps_per_epoch),
        desc=f"epoch {state.epoch + 1}/{tc.epochs or 'auto'}",
        disable=not progress or rank > 0,
        unit="step",
        leave=False,
    )
    started = time.perf_counter()
    for step in bar:
        if tc.max_steps is not None and state.step >= tc.max_steps:
            break
        lo = (step * world + rank) * tc.batch_size
        idx = perm[lo : lo + tc.batch_size]
        u, v = data.users.index_select(0, idx), data.items.index_select(0, idx)
        touched: dict[str, Any] | None = {} if optimizer.rows is not None else None
        loss = step_module(
            consumer_t, producer_t, u, v, data.follows, data.log_q, data.neg_p, tc, gen, touched
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step(touched)
        losses.append(float(loss.detach()))
        state.step += 1
        examples += len(idx)
        if step % 20 == 0:
            rate = (step + 1) * tc.batch_size / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", ex_s=f"{rate:,.0f}")
    bar.close()
    return losses, examples


def _world() -> tuple[int, int]:
    """(world size, rank) of the torch.distributed group, (1, 0) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class _StepLoss(torch.nn.Module):
    """One training step's loss as a module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> torch.Tensor:
        return _step_loss(self.model, *args)


def row_updates(tc: TrainConfig, world: int, n_accounts: int) -> bool:
    """Row-wise id-table updates (id_rows): auto picks them for big tables in one process
    (at 1M accounts 17.8k vs SparseAdam's 15.9k examples/s; at 34k dense fused Adam is
    faster, 19.8k vs 16.2k). Under DDP the id tables stay parameters, so that gradients are
    averaged over ranks."""
    if tc.sparse_ids == "rows" and world > 1:
        raise InputError(
            "row-wise id updates run in one process; use auto, always or never under torchrun",
            field="train.sparse_ids",
            value=tc.sparse_ids,
        )
    big = n_accounts > SPARSE_IDS_ABOVE
    return tc.sparse_ids == "rows" or (tc.sparse_ids == "auto" and world == 1 and big)


class Optimizer:
    """Adam (fused) for the towers; the shared id tables are updated row-wise (RowAdam), or
    by SparseAdam when they get sparse gradients, or by the same Adam."""

    def __init__(self, model: TwoTower, tc: TrainConfig, rows: bool = False) -> None:
        tables = list(model.id_tables.parameters()) if rows or model.sparse_ids else []
        table_ids = {id(p) for p in tables}
        dense = [p for p in model.parameters() if id(p) not in table_ids]
        self.dense = torch.optim.Adam(
            dense, lr=tc.learning_rate, weight_decay=tc.weight_decay, fused=True
        )
        self.rows = RowAdam(model.id_tables, tc.learning_rate) if rows else None
        self.sparse = None
        if tables and not rows:
            self.sparse = torch.optim.SparseAdam(tables, lr=tc.learning_rate)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the optimizers' gradients (row-wise leaves are new every step)."""
        self.dense.zero_grad(set_to_none=set_to_none)
        if self.sparse is not None:
            self.sparse.zero_grad(set_to_none=set_to_none)

    def step(self, touched: dict[str, Any] | None = None) -> None:
        """One update of every parameter; `touched` holds the step's id rows and leaves."""
        self.dense.step()
        if self.sparse is not None:
            self.sparse.step()
        if self.rows is not None and touched:
            self.rows.step(touched["rows"], touched["leaves"])

    def state_dict(self) -> dict[str, Any]:
        """Every state, for checkpoints."""
        return {
            "dense": self.dense.state_dict(),
            "sparse": None if self.sparse is None else self.sparse.state_dict(),
            "rows": None if self.rows is None else self.rows.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every state from a checkpoint."""
        self.dense.load_state_dict(state["dense"])
        if self.sparse is not None:
            self.sparse.load_state_dict(state["sparse"])
        if self.rows is not None:
            self.rows.load_state_dict(state["rows"])


def _history_weights(
    batch: dict[str, Any], targets: torch.Tensor, tc: TrainConfig, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Per-id weights of the history bags: the target itself is never in its own history
    (leave-one-out), single ids and whole histories are dropped at random."""
    weights = {}
    drop_user = torch.rand(len(targets), generator=gen) < tc.history_dropout
    for name in HISTORY_BAGS:
        if name not in batch:
            continue
        flat, _, segment = batch[name]
        keep = (flat != targets.index_select(0, segment)) & ~drop_user.index_select(0, segment)
        if tc.item_dropout > 0:
            keep &= torch.rand(len(flat), generator=gen) >= tc.item_dropout
        weights[name] = keep.float()
    return weights


def _producer_weights(
    batch: dict[str, Any], users: torch.Tensor, tc: TrainConfig, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """The follow being learned is not yet an edge the target's follower bag may show; the
    target's own id is hidden at random (`new_account_dropout`) so that the tower learns to
    place an account from its features alone, as it must for accounts newer than the model."""
    weights = {}
    for name in FOLLOWER_BAGS:
        if name in batch:
            flat, _, segment = batch[name]
            weights[name] = (flat != users.index_select(0, segment)).float()
    if tc.new_account_dropout > 0 and OWN_ID in batch:
        flat, _, _ = batch[OWN_ID]
        weights[OWN_ID] = (torch.rand(len(flat), generator=gen) >= tc.new_account_dropout).float()
    return weights


def _step_loss(
    model: TwoTower,
    consumer_t: TowerTensors,
    producer_t: TowerTensors,
    u: torch.Tensor,
    v: torch.Tensor,
    follows: FollowIndex,
    log_q: torch.Tensor | None,
    neg_p: torch.Tensor,
    tc: TrainConfig,
    gen: torch.Generator,
    touched: dict[str, Any] | None = None,
) -> torch.Tensor:
    """One step's loss. With `touched` (row-wise id updates) the towers pool from the rows the
    step touches, and `touched` receives those rows and their leaf tensors."""
    cb = consumer_t.batch(u)
    pb = producer_t.batch(v)
    user_weights = _history_weights(cb, v, tc, gen)
    item_weights = _producer_weights(pb, u, tc, gen)
    # Sampled negatives: for pointwise one pool per batch (the producer tower runs on the
    # pool once instead of on every pair); for in_batch optional mixed negatives.
    neg_ids = None
    if tc.objective == "pointwise":
        neg_ids = torch.multinomial(neg_p, len(v), replacement=True, generator=gen)
    elif tc.mixed_negatives > 0:
        neg_ids = torch.multinomial(neg_p, tc.mixed_negatives, replacement=True, generator=gen)
    nb = None if neg_ids is None else producer_t.batch(neg_ids)
    tables = None
    if touched is not None:
        batches = [(consumer_t.features, cb), (producer_t.features, pb)]
        if nb is not None:
            batches.append((producer_t.features, nb))
        touched["rows"], tables = touch_rows(model.id_tables, batches)
        touched["leaves"] = tables
    groups = [(model.consumer, cb, user_weights), (model.producer, pb, item_weights)]
    if nb is not None:
        groups.append((model.producer, nb, None))
    # Every bag is pooled here (weights and touched rows applied), so the towers take the
    # pooled bags and never read the id tables themselves.
    pooled = model.pool_bags(groups, tables)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tc.precision == "bf16"):
        user = model.consumer(cb, pooled=pooled[0])
        item = model.producer(pb, pooled=pooled[1])
        negatives = None if nb is None else model.producer(nb, pooled=pooled[2])
    if tc.objective == "pointwise":
        pick = torch.randint(len(v), (len(v), tc.pointwise_negatives), generator=gen)
        loss = pointwise_logistic(user, item, negatives[pick], model.inv_temperature, model.bias)
    else:
        loss = in_batch_softmax(
            user,
            item,
            u,
            v,
            model.inv_temperature,
            None if log_q is None else log_q[v],
            follows,
            negatives,
            neg_ids,
            None if log_q is None or neg_ids is None else log_q[neg_ids],
        )
    if model.interaction is not None:
        shuffled = torch.roll(item.detach(), 1, 0)
        pos = model.interaction_score(user.detach(), item.detach())
        neg = model.interaction_score(user.detach(), shuffled)
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
            torch.cat([pos, neg]), torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        )
    return loss
