"""Online experiments' records: definitions (arms with traffic shares), who was assigned
where, what was shown (impressions) and what users did (events). One SQL store: SQLite
under the run folder by default, PostgreSQL in production (`experiments.store`).

The service writes impressions and events; the analysis and the canary decision read them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from followrec.core.errors import InputError
from followrec.core.secrets import expand

BUCKETS = 10_000  # assignment resolution: shares are multiples of 0.01%
LEGACY_BLEND = "blend"  # an arm served from the precomputed narrow-source blend
CHAMPION = "champion"  # an arm served by whatever version holds the champion alias
LIVE, STOPPED, ROLLED_BACK, PROMOTED = "running", "stopped", "rolled_back", "promoted"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION_TARGET = re.compile(r"v?(\d{1,12})")

metadata = sa.MetaData()
experiments_table = sa.Table(
    "experiments",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("definition", sa.Text, nullable=False),  # JSON: salt, arms, planned size, roles
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
impressions_table = sa.Table(
    "impressions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("user_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("experiment", sa.String(64), index=True),
    sa.Column("arm", sa.String(64)),
    sa.Column("model_version", sa.String(32)),
    sa.Column("index_version", sa.String(80)),
    sa.Column("account_ids", sa.Text, nullable=False),  # JSON list, position = list order
)
events_table = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("account_id", sa.BigInteger, nullable=False),
)


@dataclass(frozen=True)
class Arm:
    """A slice of traffic: `target` is `champion`, a model version (`v3`), or `blend`."""

    name: str
    share: float
    target: str

    @property
    def model_version(self) -> str | None:
        """The registered version this arm serves, when it names one."""
        found = _VERSION_TARGET.fullmatch(self.target)
        return found.group(1) if found else None


@dataclass(frozen=True)
class Experiment:
    """A definition: arms with shares summing to 1, a salt for assignment, the planned
    users per arm, and which arm is the control (comparisons are against it)."""

    name: str
    arms: tuple[Arm, ...]
    salt: str
    control: str
    min_users_per_arm: int = 1000
    canary: str | None = None  # the arm a canary decision watches
    status: str = LIVE
    reason: str | None = None
    created_at: str | None = None
    bounds: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_definition(self)
        edges, total = [], 0.0
        for arm in self.arms:
            total += arm.share
            edges.append(round(total * BUCKETS))
        edges[-1] = BUCKETS
        object.__setattr__(self, "bounds", tuple(edges))

    def arm_for(self, user_id: int) -> Arm:
        """The user's arm: deterministic in (salt, user id), so sticky across restarts and
        replicas without any shared state."""
        b = bucket(self.salt, user_id)
        for arm, edge in zip(self.arms, self.bounds):
            if b < edge:
                return arm
        return self.arms[-1]

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise InputError("no such arm", field="arm", value=name)

    def definition(self) -> dict[str, Any]:
        return {
            "arms": [asdict(a) for a in self.arms],
            "salt": self.salt,
            "control": self.control,
            "min_users_per_arm": self.min_users_per_arm,
            "canary": self.canary,
        }


def bucket(salt: str, user_id: int) -> int:
    """A user's bucket in [0, BUCKETS): SHA-256 of "salt:user", uniform and independent
    across salts."""
    digest = hashlib.sha256(f"{salt}:{int(user_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def check_definition(exp: Experiment) -> None:
    """Raise naming the first field at fault."""
    if not _NAME.fullmatch(exp.name or ""):
        raise InputError("letters, digits, _ . - (at most 64)", field="name", value=exp.name)
    if len(exp.arms) < 2:
        raise InputError("an experiment needs at least two arms", field="arms", value=len(exp.arms))
    names = [a.name for a in exp.arms]
    for arm in exp.arms:
        if not _NAME.fullmatch(arm.name):
            raise InputError("letters, digits, _ . - (at most 64)", field="arm", value=arm.name)
        if not 0 < arm.share < 1:
            raise InputError(
                "a share must lie in (0, 1)", field=f"arms.{arm.name}", value=arm.share
            )
        if arm.target not in (CHAMPION, LEGACY_BLEND) and arm.model_version is None:
            raise InputError(
                "an arm serves `champion`, `blend` or a model version like v3",
                field=f"arms.{arm.name}",
                value=arm.target,
            )
    if len(set(names)) != len(names):
        raise InputError("arm names repeat", field="arms", value=names)
    if abs(sum(a.share for a in exp.arms) - 1.0) > 1e-6:
        raise InputError(
            "arm shares must sum to 1", field="arms", value=[a.share for a in exp.arms]
        )
    if exp.control not in names:
        raise InputError("the control must be one of the arms", field="control", value=exp.control)
    if exp.canary is not None and exp.canary not in names:
        raise InputError("the canary must be one of the arms", field="canary", value=exp.canary)
    if exp.min_users_per_arm < 1:
        raise InputError(
            "must be at least 1", field="min_users_per_arm", value=exp.min_users_per_arm
        )


def parse_arm(text: str) -> Arm:
    """`name=target:share` (e.g. `control=blend:0.5`, `treatment=champion:0.5`)."""
    name, sep, rest = text.partition("=")
    target, sep2, share = rest.rpartition(":")
    if not sep or not sep2:
        raise InputError(
            "expected NAME=TARGET:SHARE, e.g. treatment=champion:0.5", field="--arm", value=text
        )
    try:
        value = float(share)
    except ValueError:
        raise InputError("the share is not a number", field="--arm", value=text) from None
    return Arm(name=name.strip(), share=value, target=target.strip())


def store_url(configured: str | None, run_dir: Path) -> str:
    """The configured SQLAlchemy URL (its ${VAR}s filled), or SQLite under the run."""
    if configured:
        return expand(configured, "experiments.store")
    folder = Path(run_dir).resolve() / "experiments"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'experiments.db'}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: Any) -> pd.Series:
    return pd.to_datetime(value, utc=True)


class ExperimentStore:
    """Definitions and logs in one SQL database (tables created on first use)."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
        if url.startswith("sqlite"):
            # Several threads (requests, the log writer) share one file; WAL keeps readers
            # off the writer's lock.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_wal)
        metadata.create_all(self.engine)

    # -------------------------------------------------------------- definitions

    def create(self, exp: Experiment) -> Experiment:
        """Store a new running experiment; refused while another one runs (a user is in
        at most one experiment) or when the name is taken."""
        with self.engine.begin() as conn:
            taken = conn.execute(
                sa.select(experiments_table.c.name).where(experiments_table.c.name == exp.name)
            ).first()
            if taken:
                raise InputError("an experiment of that name exists", field="name", value=exp.name)
            live = conn.execute(
                sa.select(experiments_table.c.name).where(experiments_table.c.status == LIVE)
            ).first()
            if live:
                raise InputError(
                    f"experiment {live[0]!r} is running: stop it first "
                    "(`followrec experiment stop`)",
                    field="name",
                    value=exp.name,
                )
            now = _now()
            conn.execute(
                experiments_table.insert().values(
                    name=exp.name,
                    definition=json.dumps(exp.definition()),
                    status=LIVE,
                    created_at=now,
                    updated_at=now,
                )
            )
        return self.get(exp.name)

    def get(self, name: str) -> Experiment:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(experiments_table).where(experiments_table.c.name == name)
            ).first()
        if row is None:
            raise InputError("no such experiment", field="experiment", value=name)
        return _experiment(row)

    def all(self) -> list[Experiment]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(experiments_table).order_by(experiments_table.c.created_at)
            ).all()
        return [_experiment(r) for r in rows]

    def live(self) -> Experiment | None:
        """The running experiment, if any."""
        running = [e for e in self.all() if e.status == LIVE]
        return running[-1] if running else None

    def set_status(self, name: str, status: str, reason: str | None = None) -> Experiment:
        self.get(name)
        with self.engine.begin() as conn:
            conn.execute(
                experiments_table.update()
                .where(experiments_table.c.name == name)
                .values(status=status, reason=reason, updated_at=_now())
            )
        return self.get(name)

    # -------------------------------------------------------------- logs

    def log_impressions(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(impressions_table.insert(), rows)

    def log_events(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(events_table.insert(), rows)

    def impressions(self, experiment: str | None, since: dt.datetime | None = None) -> pd.DataFrame:
        """One row per shown account: request, time, user, experiment, arm, versions,
        position; one experiment's, or every list served in an experiment (None) since."""
        query = sa.select(impressions_table)
        if experiment is not None:
            query = query.where(impressions_table.c.experiment == experiment)
        else:
            query = query.where(impressions_table.c.experiment.is_not(None))
        if since is not None:
            query = query.where(impressions_table.c.ts >= since)
        with self.engine.connect() as conn:
            frame = pd.read_sql(query, conn)
        if frame.empty:
            return frame.assign(
                account_id=pd.Series(dtype="int64"), position=pd.Series(dtype="int64")
            )
        frame["ts"] = _utc(frame["ts"])
        frame["account_id"] = frame.pop("account_ids").map(json.loads)
        frame = frame.explode("account_id", ignore_index=False).dropna(subset=["account_id"])
        frame["position"] = frame.groupby(level=0).cumcount()
        frame["account_id"] = frame["account_id"].astype("int64")
        return frame.reset_index(drop=True)

    def events(self, since: dt.datetime | None = None) -> pd.DataFrame:
        query = sa.select(events_table)
        if since is not None:
            query = query.where(events_table.c.ts >= since)
        with self.engine.connect() as conn:
            frame = pd.read_sql(query, conn)
        frame["ts"] = _utc(frame["ts"])
        return frame


def _sqlite_wal(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _experiment(row: Any) -> Experiment:
    d = json.loads(row.definition)
    return Experiment(
        name=row.name,
        arms=tuple(Arm(**a) for a in d["arms"]),
        salt=d["salt"],
        control=d["control"],
        min_users_per_arm=d.get("min_users_per_arm", 1000),
        canary=d.get("canary"),
        status=row.status,
        reason=row.reason,
        created_at=str(row.created_at),
    )
