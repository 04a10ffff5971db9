"""Typed run configuration: small defaults, a YAML file to override, `--set a.b=value`."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from followrec.core.errors import InputError
from followrec.core.secrets import CONNECTION_FIELDS, check_no_password


@dataclass(frozen=True)
class DataConfig:
    """Where the follow graph comes from."""

    dataset: str = "twitch"  # twitch | edgelist | synthetic | parquet
    twitch_dir: str = "../shared/data/twitch"
    twitch_languages: tuple[str, ...] = ("DE", "ENGB", "ES", "FR", "PTBR", "RU")
    edges: str | None = None  # edge-list file (dataset=edgelist)
    nodes: str | None = None  # optional node-attribute CSV (dataset=edgelist)
    undirected: bool = False
    header: str = "auto"  # auto | yes | no
    parquet_dir: str | None = None  # raw contract tables (dataset=parquet)


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic social network (ground truth for scale and simulation)."""

    n_accounts: int = 20_000
    mean_follows: float = 20.0
    n_topics: int = 64
    n_languages: int = 8
    countries_per_language: int = 4
    homophily: float = 0.8  # share of follows inside the user's language
    triadic_share: float = 0.3  # share of follows made by closing a triangle
    popularity_exponent: float = 1.1  # Pareto tail of account popularity
    engagements_per_follow: float = 1.0
    seed: int = 7


@dataclass(frozen=True)
class SplitConfig:
    """How follows are split into training and holdout."""

    holdout_fraction: float = 0.2
    seed: int = 42
    cold_start_max_follows: int = 3  # users with at most this many training follows
    min_user_follows: int = 2  # users with fewer follows keep them all in training


@dataclass(frozen=True)
class FeatureConfig:
    """Feature transform settings."""

    recent_follows: int = 20  # length of the recent-follows id bag
    max_history: int = 200  # cap on the all-follows id bag
    follower_top_topics: int = 16  # producer: most common topics among followers
    # Graph features, each off at 0 (measured not to pay on Twitch: README, "Graph features").
    followers: int = 0  # producer `followers`: most recent followers (id bag), e.g. 50
    two_hop: int = 0  # consumer `two_hop`: accounts most reached by 2-step paths, e.g. 50
    two_hop_fanout: int = 30  # recent follows expanded per step of those paths
    graph_embedding_dim: int = 0  # `follows_svd` / `followers_svd`: spectral embedding, e.g. 32
    reference_time: str | None = None  # account age is measured here; default: last event


@dataclass(frozen=True)
class BaselineConfig:
    """The narrow candidate sources."""

    sources: tuple[str, ...] = (
        "popularity",
        "popularity_segment",
        "friends_of_friends",
        "cofollow_cf",
        "als",
        "blend",
    )  # also "lightgcn": the graph peer, minutes on Twitch (benchmarks/quality.py adds it)
    cf_neighbours: int = 200  # item-item CF keeps this many neighbours per account
    als_factors: int = 64
    als_iterations: int = 15
    als_regularization: float = 0.05
    als_alpha: float = 2.0
    lightgcn_dim: int = 64
    lightgcn_layers: int = 3
    lightgcn_learning_rate: float = 0.005
    lightgcn_batch_size: int = 16384
    lightgcn_weight_decay: float = 1e-4
    lightgcn_epochs: int = 80
    lightgcn_min_epochs: int = 20  # no early stop before: BPR recall is flat at first
    lightgcn_eval_every: int = 5
    lightgcn_patience: int = 2
    lightgcn_threads: int = 2
    seed: int = 11


@dataclass(frozen=True)
class TrainConfig:
    """Two-tower model and training loop."""

    objective: str = "in_batch"  # in_batch (sampled softmax + logQ) | pointwise (logistic)
    spec: str | None = None  # tower spec YAML; default: features.spec.DEFAULT_SPEC
    embedding_dim: int = 64
    hidden: tuple[int, ...] = (256,)
    output_dim: int = 64
    # None (auto): at least 8 epochs, and on small graphs (few steps per epoch) on until
    # min_steps steps; a number: exactly that many epochs. Early stopping applies to both,
    # under auto epochs only once min_steps steps are taken.
    epochs: int | None = None
    min_steps: int = 3000
    batch_size: int = 1024
    learning_rate: float = 0.01
    weight_decay: float = 0.0
    temperature: float = 0.1  # initial value; learned
    logq_correction: bool = True
    # Scales the logQ term (partial or over-correction; 0 is logq_correction=false). Twitch
    # ENGB / DE Recall@100 against 1.0: 0 -14% / -38%, 0.75 -1.9% / -3.1%, 1.25 +0.8% /
    # +0.5%, 2.0 -0.2% / -2.9% (one seed each).
    logq_weight: float = 1.0
    mixed_negatives: int = 0  # extra sampled negatives per batch (Yang et al. 2020)
    pointwise_negatives: int = 4  # random negatives per positive (pointwise objective)
    negative_exponent: float = (
        0.0  # sampled negatives ~ popularity^x: 0 uniform, >0 popular, <0 niche
    )
    history_dropout: float = 0.2  # drop a user's whole follow history (cold-start robustness)
    item_dropout: float = 0.3  # drop single followed accounts from the history bag
    # Hide a producer's own id embedding at random, so accounts newer than the model (no id
    # row) are placed from their other features by an index refresh.
    new_account_dropout: float = 0.0
    max_history: int = 50  # followed accounts fed to the consumer tower
    validation_fraction: float = 0.1  # of training follows, for early stopping
    validation_users: int = 3000
    # After early stopping, train fresh towers on every training follow for the best epoch
    # count when validation held back at least this share of them (0: always, 1: never).
    # Twitch: 3.5-10.4% on the language graphs (refit; ENGB +4.4% / +10.0% Recall@100 /
    # MAP@100), 1.1% on the union (no refit: it would add ~60% to training for ~1% data).
    refit_above: float = 0.02
    # Keep the early-stopped towers beside the refit ones: the model scores with the mean of
    # both cosines (an index holds 2 x output_dim). Over the refit alone, Twitch language
    # graphs: +0.1-3.7% Recall@100, +1.0-6.3% MAP@100 (ENGB +3.7% / +6.3%).
    refit_keeps_early: bool = True
    patience: int = 2
    interaction_head: bool = False  # extra MLP scorer over both embeddings (ranking studies)
    # How the shared id tables learn: auto (above 200k accounts row-wise, or sparse under
    # torchrun; below, dense) | rows (only the rows a step touches: lazy Adam) | always
    # (sparse gradients, SparseAdam) | never (dense gradients, Adam with the towers).
    sparse_ids: str = "auto"
    # Tower matmuls in bfloat16 (autocast) or float32; weights and the loss stay float32.
    precision: str = "fp32"
    threads: int = 2
    seed: int = 13
    max_steps: int | None = None  # stop after this many steps (tests, smoke runs)


@dataclass(frozen=True)
class EvalConfig:
    """Offline protocol."""

    ks: tuple[int, ...] = (10, 50, 100, 200)
    two_tower: tuple[str, ...] = ("two_tower", "two_tower_pointwise")  # variants to train
    max_users: int | None = None  # evaluate a seeded sample of holdout users; None = all
    seed: int = 3
    groups: tuple[str, ...] = ()  # account attribute columns: per-group recall/MAP, exposure


@dataclass(frozen=True)
class IndexConfig:
    """Producer index built for a model before promotion."""

    root: str | None = None  # versioned index folders; default: RUN_DIR/indexes
    kind: str = "auto"  # auto | flat | hnsw | ivf
    target_recall: float = 0.95  # ANN Recall@100 against exact search
    sample_users: int = 2000


@dataclass(frozen=True)
class GateConfig:
    """What a challenger must reach to be promoted (besides beating the champion)."""

    floor_recall_at_100: float = 0.0
    floor_map_at_100: float = 0.0
    max_disparity: float | None = None  # worst exposure/follow-share ratio (or inverse) allowed


@dataclass(frozen=True)
class MlflowConfig:
    """Tracking; the default is a SQLite file inside the run's output folder."""

    tracking_uri: str | None = None
    experiment: str = "followrec"
    enabled: bool = True


@dataclass(frozen=True)
class FeastConfig:
    """The feature store. Defaults are embedded (SQLite online store, file registry, DuckDB
    over the Parquet snapshots as the offline store)."""

    project: str = "followrec"
    online_store: str = "sqlite"  # sqlite | redis
    # duckdb | file (Feast's dask store). On Twitch DuckDB did the point-in-time join of the
    # training set in 1.2 s against 78.8 s, materialization in 11.5 s against 34.9 s.
    offline_store: str = "duckdb"
    redis_connection: str = "127.0.0.1:6379"  # host:port[,db=N] when online_store is redis
    registry: str | None = None  # SQLAlchemy URL for a SQL registry; default: a file
    # Feature views loaded into the online store: serving reads only the consumer's (producers
    # are in the index); add "producer" to look accounts up online too.
    online_towers: tuple[str, ...] = ("consumer",)
    enabled: bool = True


@dataclass(frozen=True)
class ValidationConfig:
    """Data checks run before training (Great Expectations suites)."""

    min_accounts: int = 10
    min_follows: int = 10
    # Drift against the last successful run: largest relative change of the follower-count
    # median and standard deviation, and of the mean follows per user.
    max_distribution_shift: float = 0.5
    max_mean_shift: float = 0.5
    enabled: bool = True


@dataclass(frozen=True)
class ServingConfig:
    """The online candidate service (`followrec serve`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Keys are secrets: $FOLLOWREC_API_KEY (reads) and $FOLLOWREC_ADMIN_API_KEY (admin and
    # moderation routes), or the same names in $FOLLOWREC_SECRETS_FILE; never a setting.
    max_body_bytes: int = 65_536  # larger request bodies are refused (413)
    max_new_users: int = 100_000  # users created by events per process (unknown to Feast)
    poll_seconds: float = 10.0  # how often the champion alias is checked; 0 = never
    cache_size: int = 10_000  # recent results kept (by user, options and versions)
    # Worker processes on one port: each holds the model and index (one core each).
    workers: int = 1
    # Requests a worker runs at once (threads; anyio's default). 4 against 40, alternated on
    # one machine at concurrency 16, differed by less than the rounds' noise.
    threads: int = 40
    cold_start_max_follows: int = 3  # users with at most this many follows are cold starts
    log_level: str = "INFO"


@dataclass(frozen=True)
class ExperimentConfig:
    """Online experiments: where definitions and exposure logs live, how results are read."""

    store: str | None = None  # SQLAlchemy URL; default: sqlite under RUN/experiments
    poll_seconds: float = 2.0  # how often the service rereads the definitions
    attribution_hours: float = 24.0  # a follow counts for an impression shown this soon before
    retention_days: float = 7.0  # a follow is retained when not unfollowed this soon after
    alpha: float = 0.05  # significance level of every comparison
    min_users_per_arm: int = 1000  # planned sample size; earlier reads carry a warning
    guardrail_max_drop: float = 0.0  # roll a canary back when follow-through is significantly
    # below control by more than this relative drop (0: any significant drop)
    name: str | None = None  # the experiment the report/decide steps read; default: all live
    log_exposures: bool = True  # the service logs served lists and events (off: no arms)


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    feast: FeastConfig = field(default_factory=FeastConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    experiments: ExperimentConfig = field(default_factory=ExperimentConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), for YAML/JSON/MLflow params."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def flat(self) -> dict[str, Any]:
        """Dotted keys, e.g. {'split.seed': 42}."""
        out: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            for key, value in values.items():
                out[f"{section}.{key}"] = value
        return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or fail naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        is_null = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_null and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, list | tuple):
            raise InputError("expected a list", field=key, value=value)
        return tuple(_coerce(v, args[0], key) for v in value)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(str(value).replace("_", "")) if isinstance(value, str) else int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise InputError(f"expected {hint.__name__}", field=key, value=value) from None
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise InputError(f"unknown setting; known: {', '.join(sorted(names))}", field=dotted)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise InputError("expected a mapping", field=dotted, value=value)
            kwargs[key] = _build(hint, value, f"{dotted}.")
        else:
            kwargs[key] = _coerce(value, hint, dotted)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError("not a section", field=dotted)
    node[parts[-1]] = value


SITE_SETTINGS = "FOLLOWREC_SETTINGS"


def _merge(tree: dict[str, Any], loaded: dict[str, Any]) -> None:
    for key, value in loaded.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge(tree[key], value)
        else:
            tree[key] = value


SECRET_SETTINGS = {
    "serving.api_key": "FOLLOWREC_API_KEY",
    "serving.admin_api_key": "FOLLOWREC_ADMIN_API_KEY",
}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> Config:
    """Defaults, then the site file named by $FOLLOWREC_SETTINGS (a deployment's stores and
    services, e.g. docker/followrec.production.yaml), then a YAML file, then `base` (CLI
    flags), then `a.b=value` overrides."""
    tree: dict[str, Any] = {}
    for source in (os.environ.get(SITE_SETTINGS) or None, path):
        if source is None:
            continue
        source = Path(source)
        if not source.exists():
            raise InputError("config file not found", path=str(source))
        loaded = yaml.safe_load(source.read_text()) or {}
        if not isinstance(loaded, dict):
            raise InputError("top level must be a mapping", path=str(source))
        _merge(tree, loaded)
    for dotted, value in (base or {}).items():
        _set_dotted(tree, dotted, value)
    for item in overrides:
        if "=" not in item:
            raise InputError("expected KEY=VALUE", field="--set", value=item)
        dotted, raw = item.split("=", 1)
        _set_dotted(tree, dotted.strip(), yaml.safe_load(raw) if raw.strip() else raw)
    for dotted, variable in SECRET_SETTINGS.items():
        section, _, key = dotted.partition(".")
        if key in (tree.get(section) or {}):
            raise InputError(
                f"is a secret, not a setting: set ${variable} or put it in the file named "
                "by $FOLLOWREC_SECRETS_FILE",
                field=dotted,
            )
    cfg = _build(Config, tree, "")
    for dotted in CONNECTION_FIELDS:
        section, _, key = dotted.partition(".")
        check_no_password(dotted, getattr(getattr(cfg, section), key))
    return cfg


def require(checks: dict[str, bool], section: Any, reason: str) -> None:
    """Raise naming the first `section.key` whose check failed, with its value."""
    for key, ok in checks.items():
        if not ok:
            raise InputError(reason, field=key, value=getattr(section, key.split(".")[-1]))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML beside an artifact."""
    from followrec.core.atomic import atomic_write

    atomic_write(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
