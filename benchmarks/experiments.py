"""Online experiments' acceptance scenarios, through the real service and the simulated
population of a synthetic platform (loopback only, bounded in users):

  A/A     two identical champion arms, --users simulated users: no significant difference;
          then 100 seeded placebo splits of the logged users: the test's false-positive rate.
  A/B     champion against the legacy blend, --users users: the follow-through lift with its
          interval, compared in sign with the offline Recall@100 gap of the same run.
  canary  a one-step challenger on a 10% arm, checked by the decision step after every
          --canary-round users: rolled back by the guardrail, champion never moves.
  logging the service's p50 latency with the exposure log off and on (same requests).

    .venv/bin/python benchmarks/experiments.py --run runs/bench/experiments \\
        --json runs/bench/experiments.json

The run folder is built first when it has no champion (features + training on
--accounts synthetic accounts, default settings)."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from followrec.cli import main as cli  # noqa: E402
from followrec.core.config import load_config  # noqa: E402
from followrec.evaluation import experiments as analysis  # noqa: E402
from followrec.evaluation import online  # noqa: E402
from followrec.evaluation.simulate import ground_truth, simulate  # noqa: E402
from followrec.registry.aliases import CHAMPION, alias_version  # noqa: E402
from followrec.registry.promote import client_for  # noqa: E402
from followrec.serving import launch  # noqa: E402


def build(run: Path, accounts: int) -> None:
    sources = "baselines.sources=[popularity,friends_of_friends,cofollow_cf,blend]"
    common = ["--quiet", "--set", f"synthetic.n_accounts={accounts}",
              "--set", "eval.two_tower=[two_tower]", "--set", sources]  # fmt: skip
    assert cli(["features", "--run", str(run), "--dataset", "synthetic", *common]) == 0
    assert cli(["training", "--run", str(run), *common]) == 0


def run_experiment(run: Path, name: str, arms: list[str], users: int, seed: int) -> dict:
    assert cli(["experiment", "create", name, "--run", str(run), "--quiet",
                *[a for arm in arms for a in ("--arm", arm)]]) == 0  # fmt: skip
    cfg = load_config(run / "config.yaml")
    truth = ground_truth(cfg, run)
    with launch.running_service(run) as url:
        sim = simulate(url, truth, users, seed, progress=True)
    rep = online.report(cfg, run, name)
    assert cli(["experiment", "stop", name, "--run", str(run), "--quiet"]) == 0
    return {"simulation": sim, "report": rep}


def latency_p50(run: Path, log_exposures: bool, requests: int) -> float:
    import httpx

    rng = random.Random(5)
    settings = ["--set", "serving.cache_size=0",
                "--set", f"experiments.log_exposures={str(log_exposures).lower()}"]  # fmt: skip
    with launch.running_service(run, *settings) as url, httpx.Client(base_url=url) as http:
        for _ in range(50):  # warm-up
            http.get(f"/v1/users/{rng.randrange(1000)}/candidates", params={"k": 20})
        took = []
        for _ in range(requests):
            started = time.perf_counter()
            http.get(f"/v1/users/{rng.randrange(1000)}/candidates", params={"k": 20})
            took.append(time.perf_counter() - started)
    took.sort()
    return took[len(took) // 2] * 1000


def canary(run: Path, users: int, round_users: int, seed: int) -> dict:
    cfg = load_config(run / "config.yaml")
    client = client_for(cfg, run)
    champion = alias_version(client, CHAMPION).version
    one_step = ["--set", "eval.two_tower=[two_tower]", "--set", "baselines.sources=[popularity]",
                "--set", "train.max_steps=1"]  # fmt: skip
    assert cli(["training", "--run", str(run), "--quiet", *one_step]) == 0
    version = json.loads((run / "registered.json").read_text())["version"]
    assert cli(["experiment", "create", "canary", "--canary", f"v{version}", "--share", "0.1",
                "--min-users", "200", "--run", str(run), "--quiet"]) == 0  # fmt: skip
    truth = ground_truth(cfg, run)
    rounds, decision, simulated = 0, {"action": "continue"}, 0
    with launch.running_service(run) as url:
        while simulated < users and decision["action"] == "continue":
            rounds += 1
            simulate(url, truth, round_users, seed + rounds, progress=False)
            simulated += round_users
            decision = online.decide(cfg, run, "canary")
            print(f"canary round {rounds}: {simulated} users, {decision}")
    rep = online.report(cfg, run, "canary")
    return {
        "rolled_back": decision["action"] == "rollback",
        "champion_moved": alias_version(client, CHAMPION).version != champion,
        "decision": decision,
        "users_simulated": simulated,
        "rounds": rounds,
        "canary_version": str(version),
        "report": rep,
    }


def aa_scenario(run: Path, cfg, args, out: dict) -> None:  # noqa: ANN001
    name = f"aa-{args.seed}"
    aa = run_experiment(run, name, ["a=champion:0.5", "b=champion:0.5"], args.users, args.seed)
    store = online.open_store(cfg, run)
    ec = cfg.experiments
    units = analysis.attribute(
        store.impressions(None), store.events(), ec.attribution_hours, ec.retention_days, name
    )
    placebo = analysis.placebo_false_positive_rate(units, args.replications, ec.alpha, 7)
    out["aa"] = aa["report"]
    out["aa_simulation"] = aa["simulation"]
    out["aa_false_positive_rate"] = placebo["false_positive_rate"]
    out["aa_replications"] = placebo["replications"]
    out["aa_placebo_users"] = placebo["users"]


def ab_scenario(run: Path, offline: dict, args, out: dict) -> None:  # noqa: ANN001
    arms = ["control=blend:0.5", "treatment=champion:0.5"]
    ab = run_experiment(run, f"ab-{args.seed}", arms, args.users, args.seed + 1)
    out["ab"] = ab["report"]
    out["ab_simulation"] = ab["simulation"]
    gap = offline["two_tower"]["recall@100"] - offline["blend"]["recall@100"]
    lift = next(c for c in ab["report"]["comparisons"] if c["metric"] == "follow_through_rate")
    out["offline"] = {s: {m: offline[s][m] for m in ("recall@100", "map@100")} for s in offline}
    out["offline_recall_gap"] = gap
    out["ab_agrees_with_offline"] = (lift["lift"] > 0) == (gap > 0)


def logging_scenario(run: Path, args, out: dict) -> None:  # noqa: ANN001
    # Off and on alternate, so a slow spell of a shared machine hits both.
    rounds: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.latency_rounds):
        rounds["off"].append(latency_p50(run, False, args.latency_requests))
        rounds["on"].append(latency_p50(run, True, args.latency_requests))
    p50_off, p50_on = (sorted(v)[len(v) // 2] for v in (rounds["off"], rounds["on"]))
    out["logging"] = {
        "p50_ms_off": p50_off,
        "p50_ms_on": p50_on,
        "overhead_ms": p50_on - p50_off,
        "rounds": rounds,
    }


def print_table(out: dict) -> None:
    print("\n| scenario | users | result |\n|---|---|---|")
    for name in ("aa", "ab"):
        if name not in out:
            continue
        rep = out[name]
        users = sum(a["users"] for a in rep["arms"].values())
        c = next(c for c in rep["comparisons"] if c["metric"] == "follow_through_rate")
        print(f"| {rep['experiment']} follow-through lift | {users} | {c['lift']:+.2%} "
              f"[{c['ci_low']:+.2%}, {c['ci_high']:+.2%}] p={c['p_value']:.3g} |")  # fmt: skip
    if "aa" in out:
        print(f"| A/A placebo false-positive rate | {out['aa_placebo_users']} | "
              f"{out['aa_false_positive_rate']:.2%} of {out['aa_replications']} |")  # fmt: skip
    if "ab" in out:
        print(f"| offline Recall@100 two_tower - blend | | {out['offline_recall_gap']:+.4f} "
              f"(agrees in sign: {out['ab_agrees_with_offline']}) |")  # fmt: skip
    if "canary" in out:
        cn = out["canary"]
        print(f"| canary (10%, one-step model) | {cn['users_simulated']} | rolled back "
              f"{cn['rolled_back']}, champion moved {cn['champion_moved']} |")  # fmt: skip
    if "logging" in out:
        lg = out["logging"]
        print(f"| exposure logging p50 overhead | | {lg['overhead_ms']:+.2f} ms "
              f"({lg['p50_ms_off']:.2f} -> {lg['p50_ms_on']:.2f}) |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default="runs/bench/experiments", help="a synthetic run folder")
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--accounts", type=int, default=20_000, help="synthetic accounts")
    parser.add_argument("--users", type=int, default=20_000, help="simulated users per test")
    parser.add_argument("--seed", type=int, default=1, help="population seed (A/B: seed + 1)")
    parser.add_argument("--replications", type=int, default=100, help="placebo A/A splits")
    parser.add_argument("--canary-users", type=int, default=10_000, help="at most")
    parser.add_argument("--canary-round", type=int, default=2000, help="users per decision")
    parser.add_argument("--latency-requests", type=int, default=500)
    parser.add_argument("--latency-rounds", type=int, default=3, help="off/on alternations")
    parser.add_argument(
        "--scenarios", default="logging,aa,ab,canary", help="which to run, comma-separated"
    )
    args = parser.parse_args()
    run = Path(args.run).resolve()
    started = time.perf_counter()
    if not (run / "promotion.json").exists():
        build(run, args.accounts)
    cfg = load_config(run / "config.yaml")
    offline = json.loads((run / "report.json").read_text())["sources"]
    out: dict = {"run": str(run), "accounts": args.accounts, "seed": args.seed}
    scenarios = set(args.scenarios.split(","))
    if "logging" in scenarios:
        logging_scenario(run, args, out)
    if "aa" in scenarios:
        aa_scenario(run, cfg, args, out)
    if "ab" in scenarios:
        ab_scenario(run, offline, args, out)
    if "canary" in scenarios:
        out["canary"] = canary(run, args.canary_users, args.canary_round, 100)
    out["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    print_table(out)
    print(f"\nwrote {args.json} in {out['seconds']:.0f} s")


if __name__ == "__main__":
    main()
