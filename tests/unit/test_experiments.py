"""Online experiments: assignment, attribution, the interval code against hand-worked
values, the sample-ratio check, the canary verdict, and the store."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from followrec.core.config import load_config
from followrec.core.errors import InputError
from followrec.evaluation import experiments as analysis
from followrec.evaluation.exposures import Arm, Experiment, ExperimentStore, parse_arm

T0 = pd.Timestamp("2026-11-01 12:00", tz="UTC")


def _exp(shares=(0.5, 0.5), salt="s1", **kw) -> Experiment:
    arms = tuple(Arm(f"a{i}", s, "champion") for i, s in enumerate(shares))
    return Experiment(name="e", arms=arms, salt=salt, control="a0", **kw)


def test_assignment_is_deterministic_sticky_and_balanced_on_100k_ids():
    ids = np.arange(100_000)
    exp = _exp((0.1, 0.3, 0.6))
    arms = [exp.arm_for(int(u)).name for u in ids]
    # The same salt in another process (a restart, another replica) gives the same arms.
    again = _exp((0.1, 0.3, 0.6))
    assert [again.arm_for(int(u)).name for u in ids[:2000]] == arms[:2000]
    observed = pd.Series(arms).value_counts().reindex(["a0", "a1", "a2"]).to_numpy()
    chi = stats.chisquare(observed, 100_000 * np.array([0.1, 0.3, 0.6]))
    assert chi.pvalue > 0.001, observed
    # Another salt reshuffles: about half of the users change arm in a 50/50 split.
    a, b = _exp(salt="one"), _exp(salt="two")
    same = np.mean([a.arm_for(int(u)).name == b.arm_for(int(u)).name for u in ids[:20_000]])
    assert 0.47 < same < 0.53


def test_definitions_are_checked_naming_the_field():
    with pytest.raises(InputError) as bad:
        _exp((0.5, 0.6))
    assert bad.value.field == "arms"
    with pytest.raises(InputError) as bad:
        Experiment("e", (Arm("a", 0.5, "champion"), Arm("b", 0.5, "best")), "s", "a")
    assert bad.value.field == "arms.b" and bad.value.value == "best"
    with pytest.raises(InputError) as bad:
        Experiment("e", _exp().arms, "s", "zz")
    assert bad.value.field == "control"
    assert parse_arm("treatment=v12:0.25") == Arm("treatment", 0.25, "v12")
    assert parse_arm("t=v12:0.25").model_version == "12"
    with pytest.raises(InputError) as bad:
        parse_arm("treatment-champion")
    assert bad.value.field == "--arm"


def test_ratio_estimate_matches_the_hand_worked_delta_method():
    # y = follows, x = impressions of four users. R = 4 / 10; means 1 and 2.5;
    # s_y² = 2/3, s_x² = 1, s_xy = 2/3 (n - 1 = 3);
    # var = (2/3 - 2·0.4·2/3 + 0.16·1) / (4 · 2.5²) = 0.29333... / 25.
    est = analysis.ratio_estimate(np.array([1, 0, 2, 1]), np.array([2, 2, 4, 2]))
    assert est.value == pytest.approx(0.4)
    assert est.variance == pytest.approx(0.2933333333 / 25, rel=1e-8)
    mean = analysis.mean_estimate(np.array([1, 0, 2, 1]))
    assert (mean.value, mean.variance) == (pytest.approx(1.0), pytest.approx((2 / 3) / 4))


def test_compare_matches_hand_worked_lift_interval_and_p_value():
    t = analysis.Estimate(0.5, 0.0004, 1000)
    c = analysis.Estimate(0.4, 0.0003, 1000)
    out = analysis.compare(t, c, alpha=0.05)
    # lift = 0.5/0.4 - 1; se = sqrt(0.0004/0.16 + 0.25·0.0003/0.0256) = sqrt(0.0054296875)
    se = math.sqrt(0.0054296875)
    assert out["lift"] == pytest.approx(0.25)
    assert out["ci_low"] == pytest.approx(0.25 - 1.959963985 * se)
    assert out["ci_high"] == pytest.approx(0.25 + 1.959963985 * se)
    # z = 0.1 / sqrt(0.0007) = 3.7796; two-sided p = 2 · (1 - Φ(3.7796)) = 0.000157
    assert out["p_value"] == pytest.approx(0.000157, abs=2e-6)
    assert out["significant"]
    flat = analysis.compare(c, c, alpha=0.05)
    assert flat["lift"] == 0 and flat["p_value"] == pytest.approx(1.0) and not flat["significant"]


def test_sample_ratio_check():
    assert analysis.srm_p_value({"a": 5000, "b": 5000}, {"a": 0.5, "b": 0.5}) == pytest.approx(1)
    # chi² = 2 · 300² / 5000 = 36 on one degree of freedom
    broken = analysis.srm_p_value({"a": 5300, "b": 4700}, {"a": 0.5, "b": 0.5})
    assert broken == pytest.approx(stats.chi2.sf(36, 1)) and broken < 1e-8


def _frames():
    impressions = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 3],
            "account_id": [10, 11, 12, 13],
            "ts": [T0, T0, T0, T0],
            "arm": ["a", "a", "b", "b"],
        }
    )
    h = pd.Timedelta(hours=1)
    events = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2],
            "account_id": [10, 11, 99, 12, 12],
            "ts": [T0 + h, T0 + 48 * h, T0 + h, T0 + h, T0 + 50 * h],
            "type": ["follow", "follow", "follow", "follow", "unfollow"],
        }
    )
    return impressions, events


def test_attribution_window_and_retention_on_a_hand_made_log():
    impressions, events = _frames()
    units = analysis.attribute(impressions, events, attribution_hours=24, retention_days=7)
    got = units.set_index("user_id")[["arm", "impressions", "follows", "retained"]]
    # user 1: 10 followed within the hour (kept); 11 two days later (outside the window);
    # 99 never shown. user 2: 12 followed, unfollowed two days later. user 3: nothing.
    assert got.loc[1].tolist() == ["a", 2, 1, 1]
    assert got.loc[2].tolist() == ["b", 1, 1, 0]
    assert got.loc[3].tolist() == ["b", 1, 0, 0]
    longer = analysis.attribute(impressions, events, attribution_hours=72, retention_days=1)
    got = longer.set_index("user_id")
    assert got.loc[1, "follows"] == 2 and got.loc[2, "retained"] == 1


def test_placebo_splits_have_about_alpha_false_positives():
    rng = np.random.default_rng(0)
    shown = rng.integers(5, 30, size=4000)
    units = pd.DataFrame({"impressions": shown, "follows": rng.binomial(shown, 0.08)})
    out = analysis.placebo_false_positive_rate(units, replications=200, alpha=0.05, seed=1)
    assert out["replications"] == 200
    assert 0.01 <= out["false_positive_rate"] <= 0.11


def _report(lift, low, high, p, users=2000, metric="follow_through_rate"):
    comparison = {
        "treatment": "canary",
        "control": "control",
        "metric": metric,
        "lift": lift,
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "significant": p < 0.05,
    }
    arms = {"control": {"users": users}, "canary": {"users": users}}
    return {"comparisons": [comparison], "arms": arms}


def test_canary_verdict():
    exp = Experiment(
        "c", (Arm("control", 0.9, "champion"), Arm("canary", 0.1, "v2")), "s", "control",
        min_users_per_arm=1000, canary="canary",
    )  # fmt: skip
    assert (
        analysis.canary_verdict(_report(-0.4, -0.5, -0.3, 1e-6), exp, 0.0)["action"] == "rollback"
    )
    # A drop inside the tolerated margin does not roll back.
    assert (
        analysis.canary_verdict(_report(-0.04, -0.07, -0.01, 0.01), exp, 0.05)["action"]
        == "continue"
    )
    assert analysis.canary_verdict(_report(0.2, 0.1, 0.3, 1e-4), exp, 0.0)["action"] == "promote"
    early = analysis.canary_verdict(_report(0.2, 0.1, 0.3, 1e-4, users=10), exp, 0.0)
    assert early["action"] == "continue" and "planned" in early["reasons"][0]
    assert analysis.canary_verdict(_report(0.01, -0.1, 0.12, 0.8), exp, 0.0)["action"] == "continue"


def test_store_keeps_definitions_and_logs_and_allows_one_running_experiment(tmp_path):
    store = ExperimentStore(f"sqlite:///{tmp_path / 'x.db'}")
    store.create(_exp())
    with pytest.raises(InputError) as busy:
        store.create(Experiment("f", _exp().arms, "s", "a0"))
    assert "running" in str(busy.value)
    now = dt.datetime.now(dt.UTC)
    store.log_impressions([{"request_id": "r1", "ts": now, "user_id": 5, "experiment": "e",
                            "arm": "a1", "model_version": "1", "index_version": "model-v1",
                            "account_ids": "[7, 8, 9]"}])  # fmt: skip
    store.log_events([{"ts": now, "user_id": 5, "type": "follow", "account_id": 8}])
    reopened = ExperimentStore(f"sqlite:///{tmp_path / 'x.db'}")
    shown = reopened.impressions("e")
    assert shown["account_id"].tolist() == [7, 8, 9] and shown["position"].tolist() == [0, 1, 2]
    assert reopened.events()["account_id"].tolist() == [8]
    assert reopened.live().arm_for(5) == _exp().arm_for(5)
    cfg = load_config(None, ["experiments.min_users_per_arm=2"])
    rep = analysis.report(reopened, "e", cfg)
    assert rep["arms"]["a1"]["follows"] == 1 and rep["arms"]["a1"]["impressions"] == 3
    assert rep["warnings"] and "planned sample size" in rep["warnings"][0]
    reopened.set_status("e", "stopped")
    assert reopened.live() is None


def test_a_follow_shown_last_by_another_experiment_is_not_this_ones():
    impressions, events = _frames()
    impressions["experiment"] = "old"
    later = pd.DataFrame(
        {"user_id": [1], "account_id": [10], "ts": [T0 + pd.Timedelta(minutes=30)],
         "arm": ["x"], "experiment": ["new"]}
    )  # fmt: skip
    both = pd.concat([impressions, later], ignore_index=True)
    units = analysis.attribute(both, events, 24, 7, experiment="old").set_index("user_id")
    # user 1's follow of 10 came after the newer experiment showed it: not the old one's.
    assert units.loc[1, "follows"] == 0 and units.loc[2, "follows"] == 1
    assert units.loc[1, "impressions"] == 2  # the old experiment's own lists only


def test_exposure_disparity_on_a_hand_made_case():
    from followrec.core.metrics import exposure_disparity, max_disparity

    group = np.array(["x", "x", "y", "z"])
    recs = np.array([[0, 1, 2], [0, 2, -1]])
    # shown: x x y x y -> x 3/5, y 2/5, z 0; followed 0 2 3 3 -> x 1/4, y 1/4, z 2/4
    out = exposure_disparity(recs, 3, group, np.array([0, 2, 3, 3]))
    assert out["x"] == {"exposure_share": 0.6, "follow_share": 0.25, "disparity_ratio": 2.4}
    assert out["y"]["disparity_ratio"] == pytest.approx(1.6)
    assert out["z"]["exposure_share"] == 0 and out["z"]["disparity_ratio"] == 0
    assert max_disparity(out) == 1e9  # z earns half the follows and is never shown
    fair = exposure_disparity(recs, 3, group, np.array([0, 2, 2, 1]))  # x 1/2, y 1/2
    assert max_disparity(fair) == pytest.approx(1.25)  # y: 0.4 / 0.5 = 0.8 -> 1 / 0.8


def test_the_gate_can_require_a_maximum_disparity():
    from followrec.registry.gate import Decision, fairness_check

    passed = Decision(True, ["recall ok"])
    assert fairness_check(passed, {"max_disparity": 3.0}, None).promote  # off by default
    assert fairness_check(passed, {"max_disparity": 1.4}, 1.5).promote
    failed = fairness_check(passed, {"max_disparity": 3.0}, 1.5)
    assert not failed.promote and "exposure disparity 3.00 above 1.50" in failed.reasons
    unmeasured = fairness_check(passed, {}, 1.5)
    assert not unmeasured.promote and "eval.groups" in unmeasured.reasons[-1]


def test_exposure_log_writes_every_record_in_batches_and_on_its_timer(tmp_path):
    import time

    from followrec.serving.experiments import SEND_BATCH, Assignment, ExposureLog

    url = f"sqlite:///{tmp_path / 'x.db'}"
    store = ExperimentStore(url)
    exp = store.create(_exp())
    log = ExposureLog(store)
    try:
        for user in range(3):  # far fewer than a batch: only the timer sends these
            log.impression(f"t{user}", user, Assignment("e", exp.arm_for(user)), "1", "v", [1])
        deadline = time.monotonic() + 10
        while len(ExperimentStore(url).impressions("e")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(ExperimentStore(url).impressions("e")) == 3
        for user in range(3, 3 + 2 * SEND_BATCH + 7):
            log.impression(f"r{user}", user, Assignment("e", exp.arm_for(user)), "1", "v", [1])
            if user % 10 == 0:
                log.event(user, "follow", 1)
    finally:
        log.close()
    reopened = ExperimentStore(url)
    shown = reopened.impressions("e")
    assert sorted(shown["user_id"]) == list(range(3 + 2 * SEND_BATCH + 7))
    assert len(reopened.events()) == len(range(10, 3 + 2 * SEND_BATCH + 7, 10))
    assert log.dropped == 0
