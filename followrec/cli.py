"""The `followrec` command line: the same steps that the Airflow DAGs run."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from followrec.core.config import Config, load_config
from followrec.core.errors import InputError
from followrec.core.limits import MAX_ACCOUNT_ID, MAX_K

DESCRIPTION = """\
followrec: model-based 'who to follow' candidate generation.

Every command reads a typed config: defaults, then --config FILE (YAML), then the command's
flags, then any number of --set section.key=value (e.g. --set split.seed=1
--set eval.ks=10,100). `followrec config` prints the resolved config.
"""

DATASET_HELP = """where the follow graph comes from:
  twitch     the six MUSAE Twitch graphs in data.twitch_dir as one platform
  edgelist   --edges FILE (CSV or whitespace, optional header and 3rd-column Unix-seconds
             timestamp, .gz accepted) with optional --nodes attribute CSV
  synthetic  the generator (size: --set synthetic.n_accounts=N)
  parquet    contract tables written by `followrec ingest` (--path DIR)"""


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset", choices=["twitch", "edgelist", "synthetic", "parquet"], help=DATASET_HELP
    )
    group.add_argument("--edges", help="edge-list file (with --dataset edgelist)")
    group.add_argument(
        "--nodes",
        help="node-attribute CSV: one row per id; numeric columns "
        "become dense features, text categorical, a|b|c lists bags",
    )
    group.add_argument(
        "--undirected",
        action="store_true",
        default=None,
        help="each edge is a follow in both directions",
    )
    group.add_argument(
        "--header",
        choices=["auto", "yes", "no"],
        help="does the edge list start with a header line (default: auto)",
    )
    group.add_argument("--path", help="contract tables folder (with --dataset parquet)")


def bounded(kind: type, low: float | None = None, high: float | None = None) -> Callable:
    """An argparse type: a number of `kind` within [low, high], else a usage error (exit 2)
    that names the value and the range, before anything loads."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind.__name__}") from None
        if kind is float and value != value:  # NaN
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            raise argparse.ArgumentTypeError(f"{text} is outside {span}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


count = bounded(int, 1)
share = bounded(float, 0.0, 1.0)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file overriding the defaults")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set eval.max_users=5000",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their flags."""
    parser = argparse.ArgumentParser(
        prog="followrec",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawTextHelpFormatter

    ev = sub.add_parser(
        "evaluate",
        formatter_class=raw,
        help="score every candidate source on one split; write report.json/report.md",
        description="Split the graph, run every candidate source, compute Recall/Precision/"
        "MAP/NDCG/HitRate@K,\ncoverage and popularity (overall and per language, activity and"
        " cold-start group),\nwrite OUT/report.json, OUT/report.md and OUT/recall_at_k.png, log"
        " them to MLflow\nand print the table.",
    )
    _add_data_args(ev)
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    _add_config_args(ev)

    ing = sub.add_parser(
        "ingest",
        formatter_class=raw,
        help="load a dataset and write the raw contract Parquet tables",
        description="Write accounts/follows/engagements.parquet (+ "
        "dataset.json with the load report) to OUT.",
    )
    _add_data_args(ing)
    ing.add_argument("--out", required=True, help="output folder")
    _add_config_args(ing)

    gen = sub.add_parser(
        "generate",
        formatter_class=raw,
        help="generate a synthetic social network (contract tables)",
        description="Synthetic graph with ground truth, reproducible by seed.",
    )
    gen.add_argument(
        "--accounts", type=bounded(int, 2), help="number of accounts (synthetic.n_accounts)"
    )
    gen.add_argument("--seed", type=bounded(int, 0), help="random seed (synthetic.seed)")
    gen.add_argument("--out", required=True, help="output folder")
    _add_config_args(gen)

    prom = sub.add_parser(
        "promote",
        formatter_class=raw,
        help="build + validate the index of a run's registered model, gate it, promote it",
        description="For the model `followrec evaluate --out RUN` registered: encode every\n"
        "producer, build the index the factory picks (exact/HNSW/IVF), measure its ANN\n"
        "Recall@100 against exact search, then gate (beat the champion and the floors, reach\n"
        "index.target_recall). A pass moves the MLflow alias `champion` and publishes the\n"
        "index atomically; a fail leaves both as they were. Reasons go to the version's tags.\n"
        "Uses RUN/config.yaml unless --config is given.",
    )
    prom.add_argument("--run", required=True, help="the folder `followrec evaluate` wrote")
    _add_config_args(prom)

    stat = sub.add_parser(
        "status", help="the champion, its metrics and index, and every version's gate decision"
    )
    stat.add_argument("--run", required=True, help="the folder `followrec evaluate` wrote")
    stat.add_argument("--json", action="store_true", help="print JSON")
    _add_config_args(stat)

    back = sub.add_parser("rollback", help="restore the previous champion and its index")
    back.add_argument("--run", required=True, help="the folder `followrec evaluate` wrote")
    _add_config_args(back)

    from followrec.step_names import ALL_STEPS, FEATURES_STEPS, REFRESH_STEPS, TRAINING_STEPS

    run_help = "the run folder (default: runs/pipeline)"
    for name, steps, text in (
        ("features", FEATURES_STEPS, "ingest, validate, build features, Feast apply + materialize"),
        ("training", TRAINING_STEPS, "training set, train, evaluate, gate, index, promote"),
        ("refresh", REFRESH_STEPS, "re-embed producers with the champion; publish a new index"),
    ):
        pipe = sub.add_parser(
            name,
            formatter_class=raw,
            help=f"the followrec_{name if name != 'refresh' else 'index_refresh'} DAG's steps"
            f" in order: {text}",
            description="Runs, in this process and in order, the steps: " + ", ".join(steps),
        )
        if name == "features":
            _add_data_args(pipe)
        pipe.add_argument("--run", default="runs/pipeline", help=run_help)
        _add_config_args(pipe)

    main_job = sub.add_parser(
        "run",
        formatter_class=raw,
        help="the main job: the features and training DAGs under Airflow, in-process",
        description="Runs followrec_features then followrec_training with `dag.test()` on the\n"
        "embedded defaults (Airflow metadata in RUN/airflow-home, MLflow in RUN/mlflow.db,\n"
        "Feast in RUN/feast), then prints the champion and a user's candidates.",
    )
    _add_data_args(main_job)
    main_job.add_argument("--run", default="runs/pipeline", help=run_help)
    main_job.add_argument("--epochs", type=count, help="training epochs (default: the config)")
    main_job.add_argument("--languages", help="Twitch languages, comma-separated")
    _add_config_args(main_job)

    one = sub.add_parser(
        "step",
        formatter_class=raw,
        help="run one DAG task's step (what each Airflow task calls)",
        description="Steps: " + ", ".join(ALL_STEPS),
    )
    one.add_argument("name", choices=list(ALL_STEPS), metavar="NAME", help="the step (task id)")
    _add_data_args(one)
    one.add_argument("--run", default="runs/pipeline", help=run_help)
    _add_config_args(one)

    rec = sub.add_parser(
        "recommend",
        help="candidates for a user from the champion, its index and Feast online features",
    )
    rec.add_argument(
        "--user", type=bounded(int, 0, MAX_ACCOUNT_ID), required=True, help="account id of the user"
    )
    rec.add_argument(
        "--k", type=bounded(int, 1, MAX_K), default=20, help=f"how many candidates (1-{MAX_K})"
    )
    rec.add_argument("--run", default="runs/pipeline", help=run_help)
    rec.add_argument("--json", action="store_true", help="print JSON")
    rec.add_argument(
        "--popularity-discount", type=share, default=0.0, help="0-1: lower popular accounts"
    )
    rec.add_argument("--diversity", type=share, default=0.0, help="0-1: MMR diversity re-rank")
    _add_config_args(rec)

    srv = sub.add_parser(
        "serve",
        formatter_class=raw,
        help="the online candidate service (HTTP) over a run's champion",
        description="Serves the run's champion and its published index with Feast online\n"
        "features. GET /v1/users/{id}/candidates?k=100, POST /v1/candidates (onboarding),\n"
        "POST /v1/events, /healthz, /readyz, /metrics; OpenAPI docs at /docs.\n"
        "The champion alias is polled (serving.poll_seconds) and swapped in atomically.\n"
        "Settings: serving.* (followrec config); the API key also from $FOLLOWREC_API_KEY.",
    )
    srv.add_argument("--run", default="runs/pipeline", help=run_help)
    srv.add_argument("--host", help="bind address (default serving.host, 127.0.0.1)")
    srv.add_argument(
        "--port", type=bounded(int, 1, 65535), help="port (default serving.port, 8000)"
    )
    srv.add_argument(
        "--workers",
        type=bounded(int, 1, 64),
        help="worker processes on the port (default serving.workers, 1): about one per core; "
        "each holds the model and index, an event retires cached results in all, and /metrics "
        "adds up every worker's counts",
    )
    _add_config_args(srv)

    rep = sub.add_parser(
        "serving-report",
        help="cold-start recall and re-rank costs of the serving options on a run's holdout",
        description="Cold start: Recall@100 of users with few training follows (tower from "
        "their features, tower from an onboarding profile alone) against popularity by "
        "country and overall. Re-ranking: Recall/MAP lost and coverage/novelty gained by "
        "the popularity discount and the diversity re-rank. Writes RUN/serving_report.json "
        "and logs it (with a plot) to MLflow.",
    )
    rep.add_argument("--run", default="runs/pipeline", help=run_help)
    rep.add_argument("--max-users", type=count, default=5000, help="holdout users sampled")
    _add_config_args(rep)

    ui = sub.add_parser(
        "ui",
        formatter_class=raw,
        help="start the Airflow, MLflow and Feast UIs on localhost over a run",
        description="Airflow UI on :8080 (api-server, scheduler, dag-processor and triggerer;\n"
        "AIRFLOW_HOME=RUN/airflow-home, DAGs unpaused, a generated login printed once), MLflow\n"
        "UI on :5000 (RUN/mlflow.db) and Feast UI on :8888 (RUN/feast), all on --host only.\n"
        "Ctrl-C or SIGTERM stops every process they started.",
    )
    ui.add_argument("--run", default="runs/pipeline", help=run_help)
    ui.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)"
    )
    for name, port in (("airflow", 8080), ("mlflow", 5000), ("feast", 8888)):
        ui.add_argument(
            f"--{name}-port", type=bounded(int, 1, 65535), default=port, help=f"{name} UI port"
        )
    _add_config_args(ui)

    exp = sub.add_parser(
        "experiment",
        formatter_class=raw,
        help="online experiments: create, report, decide (canary), stop, list",
        description="An experiment splits users at random (a hash of salt and user id) into\n"
        "arms served by the live service: `champion`, a registered version (v3), or the\n"
        "legacy `blend` of narrow sources. Served lists and events are logged to the\n"
        "experiment store (experiments.store; SQLite under RUN/experiments by default).\n"
        "  create NAME --arm control=blend:0.5 --arm treatment=champion:0.5\n"
        "  create NAME --canary v4 --share 0.05     (control: champion, canary arm: v4)\n"
        "  report NAME [--json OUT]   lift with 95% CIs, SRM check; logged to MLflow\n"
        "  decide NAME                canary: roll back on a failed guardrail, or promote\n"
        "  stop NAME | list",
    )
    exp.add_argument("action", choices=["create", "report", "decide", "stop", "list"])
    exp.add_argument("name", nargs="?", help="the experiment (letters, digits, _ . -)")
    exp.add_argument("--run", default="runs/pipeline", help=run_help)
    exp.add_argument(
        "--arm", action="append", default=[], metavar="NAME=TARGET:SHARE",
        help="an arm (create): TARGET is champion, blend or vN; shares sum to 1",
    )  # fmt: skip
    exp.add_argument("--control", help="the arm the others are compared with (default: first)")
    exp.add_argument("--canary", metavar="VERSION", help="create a canary of this version")
    exp.add_argument(
        "--share", type=bounded(float, 0.0001, 0.5), default=0.05, help="the canary's share"
    )
    exp.add_argument(
        "--min-users",
        type=count,
        help="planned users per arm (default experiments.min_users_per_arm)",
    )
    exp.add_argument("--json", metavar="OUT", help="report: also write the report here")
    _add_config_args(exp)

    sim = sub.add_parser(
        "simulate",
        formatter_class=raw,
        help="drive the live service with a simulated population (synthetic runs)",
        description="Users of the run's synthetic graph request candidates over HTTP, see\n"
        "them with a position bias, follow with their true probability, sometimes unfollow,\n"
        "and post those events back. Starts `followrec serve` on loopback unless --url.",
    )
    sim.add_argument("--run", default="runs/pipeline", help=run_help)
    sim.add_argument("--experiment", help="the experiment expected to be running (checked)")
    sim.add_argument("--users", type=count, default=1000, help="simulated users")
    sim.add_argument("--seed", type=bounded(int, 0), default=0, help="population seed")
    sim.add_argument("--url", help="a running service (default: start one on loopback)")
    sim.add_argument("--k", type=bounded(int, 1, MAX_K), default=20, help="list length")
    sim.add_argument("--sessions", type=count, default=1, help="requests per user")
    sim.add_argument("--concurrency", type=bounded(int, 1, 64), default=8, help="client threads")
    sim.add_argument(
        "--max-seconds", type=bounded(float, 1), default=1800.0, help="stop starting users after"
    )
    sim.add_argument("--json", metavar="OUT", help="write the summary here")
    _add_config_args(sim)

    dep = sub.add_parser(
        "deploy",
        formatter_class=raw,
        help="the production topology on this machine: Celery workers and a serving replica "
        "in network namespaces, on the local PostgreSQL, Redis and RabbitMQ (root)",
        description="up: a bridge 10.231.0.1/24 with one network namespace per host (worker-1,\n"
        "worker-2: Airflow Celery workers; serve-1: followrec serve), Airflow api-server,\n"
        "scheduler, dag-processor and triggerer and an MLflow tracking server on the bridge\n"
        "address; metadata, MLflow, Feast registry and experiments in PostgreSQL databases\n"
        "followrec_deploy_*, Feast online store in Redis, Celery broker RabbitMQ. Writes\n"
        "RUN/endpoints.json (URLs, generated credentials). Run `up` again after the first\n"
        "pipeline run to start the serving replica. down: stop all, remove the namespaces\n"
        "(--purge: also the databases and RUN). status: what runs.",
    )
    dep.add_argument("action", choices=["up", "down", "status"])
    dep.add_argument("--run", default="runs/deploy", help="the deployment's folder")
    dep.add_argument("--purge", action="store_true", help="down: drop databases and folder")
    _add_config_args(dep)

    conf = sub.add_parser("config", help="print the resolved configuration as YAML")
    _add_data_args(conf)
    _add_config_args(conf)
    return parser


def _cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    mapping = {
        "dataset": "data.dataset",
        "edges": "data.edges",
        "nodes": "data.nodes",
        "undirected": "data.undirected",
        "header": "data.header",
        "path": "data.parquet_dir",
        "accounts": "synthetic.n_accounts",
        "seed": "synthetic.seed",
        "host": "serving.host",
        "port": "serving.port",
        "workers": "serving.workers",
    }
    out = {
        key: getattr(args, name)
        for name, key in mapping.items()
        if getattr(args, name, None) is not None
    }
    if getattr(args, "no_mlflow", False):
        out["mlflow.enabled"] = False
    return out


def resolve(args: argparse.Namespace) -> Config:
    """The config a command runs with (a run folder's own config for the registry steps)."""
    from followrec.step_names import FEATURES_STEPS

    path = args.config
    run = getattr(args, "run", None)
    fresh = args.command == "features" or getattr(args, "name", None) in FEATURES_STEPS
    if path is None and run is not None and not fresh and (Path(run) / "config.yaml").exists():
        path = Path(run) / "config.yaml"
    return load_config(path, args.set, base=_cli_overrides(args))


def _run_main_job(args: argparse.Namespace) -> int:
    from followrec.local_airflow import run_dags

    run = Path(args.run).resolve()
    data = {k: v for k, v in _cli_overrides(args).items() if k.startswith("data.")}
    features = {"run_dir": str(run), "extra_settings": [f"{k}={v}" for k, v in data.items()]}
    features["extra_settings"] += list(args.set)
    if args.languages:
        features["twitch_languages"] = args.languages.split(",")
    training = {"run_dir": str(run), "extra_settings": list(args.set)}
    if args.epochs:
        training["epochs"] = args.epochs
    log = run / "logs" / "run.log" if args.quiet else None
    if log is not None:
        print(f"library and task output: {log}")
    dags = {"followrec_features": features, "followrec_training": training}
    results = run_dags(run, dags, log=log)
    if len(results) < 2 or not all(r["state"].endswith("success") for r in results.values()):
        where = log or run / "airflow-home" / "logs"
        print(f"followrec: a DAG run failed; see {where}", file=sys.stderr)
        return 1
    report = json.loads((run / "report.json").read_text())
    print("\nRecall@100 / MAP@100 on the holdout:")
    for source, metrics in report["sources"].items():
        print(f"  {source:20s} {metrics['recall@100']:.4f} / {metrics['map@100']:.4f}")
    promotion = json.loads((run / "promotion.json").read_text())
    print(f"\nmodel version {promotion['model_version']} promoted: {promotion['promoted']}")
    print(f"published index: {promotion['published_index']}")
    print(
        f"next: followrec recommend --run {args.run} --user 0   |   followrec ui --run {args.run}"
    )
    return 0


NOTICES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def quiet_dependencies() -> None:
    """Dependencies' deprecation notices are for their own developers, not for a user.
    Some dependency re-adds its own filters when imported, so the notices are dropped where
    they are shown rather than by a filter."""
    shown = warnings.showwarning
    if getattr(shown, "drops_dependency_notices", False):
        return  # installed by an earlier main() in this process

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if issubclass(category, NOTICES) and "site-packages" in str(filename):
            return
        shown(message, category, filename, lineno, file, line)

    show.drops_dependency_notices = True
    warnings.showwarning = show
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # subprocesses
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # database set-up chatter


def existing_run(run: str | Path) -> Path:
    """A run folder that a pipeline or `evaluate` made; commands that read one never
    create it (nor a registry database inside it)."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise InputError(
            "not a run folder (no config.yaml): make one with `followrec run --run DIR`, "
            "`followrec features --run DIR` or `followrec evaluate --out DIR`",
            field="--run",
            value=str(run),
        )
    return run


def writable_out(out: str | Path) -> Path:
    """An output folder that exists as a folder or can be made (not an existing file)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", field="--out", value=str(out))
    return out


# Each command: (config, parsed arguments, show progress bars) -> exit status (None = 0).
Command = Callable[[Config, argparse.Namespace, bool], int | None]


def _config(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    print(json.dumps(cfg.to_dict(), indent=2))


def _evaluate(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec.evaluation import evaluate

    result = evaluate.run(cfg, writable_out(args.out), progress=progress)
    print(result["table"])
    print(f"\nreport: {result['report_uri']}")
    if "mlflow_run_id" in result:
        print(f"mlflow: run {result['mlflow_run_id']} at {result['tracking_uri']}")
    if "model_version" in result:
        print(f"model: {result['model_name']} version {result['model_version']}")


def _promote(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec.registry import promote

    out = promote.run(cfg, existing_run(args.run), progress=progress)
    verdict = "promoted" if out["promoted"] else "not promoted"
    print(f"model version {out['model_version']}: {verdict}")
    for reason in out["reasons"]:
        print(f"  - {reason}")
    if "index" in out:
        index = out["index"]
        print(
            f"index {index['kind']} {index['params']}: ANN recall@100 {index['ann_recall_at_100']}"
        )
    print(f"published index: {out['published_index']}")


def _status(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec.registry import promote

    run = existing_run(args.run)
    out = promote.status(cfg, run)
    if cfg.experiments.store or (run / "experiments" / "experiments.db").exists():
        from followrec.evaluation import online

        out["experiments"] = online.summary(cfg, run)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return
    champ = out["champion"]
    print(
        f"champion: {champ['version'] if champ else 'none'}"
        + (f" {champ['metrics']} index {champ['index_version']}" if champ else "")
    )
    for v in out["versions"]:
        print(f"  v{v['version']}: {v['decision']} {v['metrics']}")
    for item in out.get("experiments", []):
        print(f"experiment {item['name']}: {item['status']} {item['arms']}"
              + (f" ({item['reason']})" if item["reason"] else ""))  # fmt: skip
        for c in item["follow_through"] or []:
            if c["lift"] is not None:
                interval = f"[{c['ci_low']:+.2%}, {c['ci_high']:+.2%}]"
                print(f"  {c['treatment']} vs {c['control']} follow-through {c['lift']:+.2%} "
                      f"{interval} p={c['p_value']:.3g}")  # fmt: skip


def _rollback(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec.registry import promote

    out = promote.rollback(cfg, existing_run(args.run))
    print(f"champion is version {out['champion']} again; published index {out['published_index']}")


def _steps(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec import pipeline, step_names

    names = {
        "features": step_names.FEATURES_STEPS,
        "training": step_names.TRAINING_STEPS,
        "refresh": step_names.REFRESH_STEPS,
    }.get(args.command, (getattr(args, "name", None),))
    if any(name not in step_names.FEATURES_STEPS for name in names):
        existing_run(args.run)  # the features steps make the run folder; the rest read it
    for name in names:
        result = pipeline.run_step(name, cfg, args.run, progress=progress)
        print(f"{name}: {json.dumps(result, default=str)[:400]}")


def _recommend(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec.serving.candidates import Options, Recommender

    options = Options(args.k, args.popularity_discount, args.diversity)
    found = Recommender(existing_run(args.run), cfg).recommend(args.user, options)
    for warning in found.warnings:
        print(f"followrec: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
        return
    print(
        f"user {found.user_id}: model v{found.model_version}, index "
        f"{found.index_version}, cold start {found.cold_start}; ms: "
        + ", ".join(f"{k} {v * 1000:.1f}" for k, v in found.seconds.items())
    )
    for rank, (account, score) in enumerate(zip(found.account_ids, found.scores, strict=True), 1):
        print(f"{rank:4d}  {account:>10d}  {score:.4f}")


def _serving_report(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec.serving.report import serving_report

    out = serving_report(cfg, existing_run(args.run), args.max_users, progress=progress)
    print(json.dumps(out, indent=2))


def _serve(cfg: Config, args: argparse.Namespace, progress: bool) -> int:
    from followrec.serving.server import serve

    return serve(cfg, existing_run(args.run), args.host, args.port)


def _ui(cfg: Config, args: argparse.Namespace, progress: bool) -> int:
    from followrec.ui import serve_uis

    ports = {"airflow": args.airflow_port, "mlflow": args.mlflow_port, "feast": args.feast_port}
    return serve_uis(cfg, Path(args.run), args.host, ports)


def _ingest(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec.features import ingest

    if args.command == "generate":
        cfg = load_config(
            args.config, args.set, base={**_cli_overrides(args), "data.dataset": "synthetic"}
        )
    result = ingest.run(cfg, writable_out(args.out), progress=progress)
    print(json.dumps(result, indent=2, default=str))


def _experiment(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec.evaluation import online
    from followrec.evaluation.exposures import CHAMPION, Arm, parse_arm

    run = existing_run(args.run)
    if args.action == "list":
        for item in online.summary(cfg, run):
            print(f"{item['name']}: {item['status']} {item['arms']}"
                  + (f" ({item['reason']})" if item["reason"] else ""))  # fmt: skip
        return
    if not args.name:
        raise InputError("name the experiment", field="name")
    if args.action == "create":
        if args.canary:
            version = args.canary.lstrip("v")
            arms = [
                Arm("control", 1 - args.share, CHAMPION),
                Arm("canary", args.share, f"v{version}"),
            ]
            control, canary = "control", "canary"
        else:
            arms = [parse_arm(text) for text in args.arm]
            control, canary = args.control or (arms[0].name if arms else ""), None
        exp = online.create(cfg, run, args.name, arms, control, canary, args.min_users, progress)
        print(f"experiment {exp.name} running: " + ", ".join(
            f"{a.name}={a.target} {a.share:.1%}" for a in exp.arms))  # fmt: skip
        print(f"the service picks it up within {cfg.experiments.poll_seconds:g} s")
    elif args.action == "report":
        rep = online.report(cfg, run, args.name)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(rep, indent=2, default=str))
        _print_report(rep)
    elif args.action == "decide":
        out = online.decide(cfg, run, args.name)
        print(f"{args.name}: {out['action']}")
        for reason in out["reasons"]:
            print(f"  - {reason}")
    elif args.action == "stop":
        exp = online.stop(cfg, run, args.name)
        print(f"experiment {exp.name}: {exp.status}")


def _print_report(rep: dict[str, Any]) -> None:
    print(f"experiment {rep['experiment']} ({rep['status']}), control {rep['control']}")
    for arm, v in rep["arms"].items():
        ftr = v["follow_through_rate"]
        print(f"  {arm:12s} {v['target']:9s} users {v['users']:7d}  impressions "
              f"{v['impressions']:8d}  follows {v['follows']:6d}  follow-through "
              f"{'-' if ftr is None else f'{ftr:.4f}'}")  # fmt: skip
    for c in rep["comparisons"]:
        if c["lift"] is None:
            continue
        mark = "significant" if c["significant"] else "not significant"
        print(f"  {c['treatment']} vs {c['control']} {c['metric']}: {c['lift']:+.2%} "
              f"[{c['ci_low']:+.2%}, {c['ci_high']:+.2%}] p={c['p_value']:.3g} {mark}")  # fmt: skip
    if rep["srm_p_value"] is not None:
        print(f"  sample-ratio check p = {rep['srm_p_value']:.3g}")
    for warning in rep["warnings"]:
        print(f"  warning: {warning}")


def _simulate(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec.core.secrets import secret
    from followrec.evaluation import online
    from followrec.evaluation.simulate import Behaviour, ground_truth, simulate

    run = existing_run(args.run)
    truth = ground_truth(cfg, run)
    if args.experiment:
        live = online.open_store(cfg, run).live()
        if live is None or live.name != args.experiment:
            raise InputError(
                f"not the running experiment (running: {live.name if live else 'none'})",
                field="--experiment",
                value=args.experiment,
            )
    behaviour = Behaviour(k=args.k, sessions=args.sessions)

    def run_against(url: str) -> dict[str, Any]:
        return simulate(url, truth, args.users, args.seed, behaviour, args.concurrency,
                        args.max_seconds, secret("FOLLOWREC_API_KEY"), progress)  # fmt: skip

    if args.url:
        out = run_against(args.url)
    else:
        from followrec.serving import launch

        with launch.running_service(run, *[f"--set={s}" for s in args.set]) as url:
            out = run_against(url)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "error_samples"}, indent=2))
    if out["errors"]:
        print(f"followrec: {out['errors']} users hit errors: {out['error_samples'][:3]}",
              file=sys.stderr)  # fmt: skip


def _deploy(cfg: Config, args: argparse.Namespace, progress: bool) -> None:
    from followrec import deploy

    if args.action == "up":
        out = deploy.up(Path(args.run))
        print(f"deployed: {', '.join(sorted(out['processes']))}")
        print(f"endpoints and credentials: {out['endpoints']}")
    elif args.action == "down":
        out = deploy.down(Path(args.run), purge=args.purge)
        print(
            f"stopped: {', '.join(out['stopped']) or 'nothing'}"
            + (" (purged)" if args.purge else "")
        )
    else:
        print(json.dumps(deploy.status(Path(args.run)), indent=2))


COMMANDS: dict[str, Command] = {
    "config": _config,
    "evaluate": _evaluate,
    "promote": _promote,
    "status": _status,
    "rollback": _rollback,
    "features": _steps,
    "training": _steps,
    "refresh": _steps,
    "step": _steps,
    "run": lambda cfg, args, progress: _run_main_job(args),
    "recommend": _recommend,
    "serving-report": _serving_report,
    "serve": _serve,
    "ui": _ui,
    "experiment": _experiment,
    "simulate": _simulate,
    "deploy": _deploy,
    "ingest": _ingest,
    "generate": _ingest,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `followrec` console script: exit 0, 2 for bad input (the message
    names the field and value), 3 when a data validation failed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_dependencies()
    progress = not args.quiet and sys.stderr.isatty()
    if not progress:  # MLflow's download bars ignore --quiet otherwise
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return COMMANDS[args.command](resolve(args), args, progress) or 0
    except InputError as exc:
        print(f"followrec: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from followrec.features.validation import ValidationFailed

        if not isinstance(exc, ValidationFailed):
            raise
        print(f"followrec: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
