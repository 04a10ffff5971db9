"""Typed config: defaults, YAML, --set, and errors naming the key."""

import pytest

from followrec.core.config import Config, load_config
from followrec.core.errors import InputError


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("split:\n  seed: 5\neval:\n  ks: [5, 10]\n")
    cfg = load_config(
        path,
        [
            "split.seed=9",
            "eval.max_users=100",
            "data.twitch_languages=[DE, FR]",
            "mlflow.enabled=false",
        ],
    )
    assert cfg.split.seed == 9
    assert cfg.eval.ks == (5, 10)
    assert cfg.eval.max_users == 100
    assert cfg.data.twitch_languages == ("DE", "FR")
    assert cfg.mlflow.enabled is False
    assert cfg.split.holdout_fraction == Config().split.holdout_fraction
    assert load_config(None, ["eval.ks=10,50"]).eval.ks == (10, 50)


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ("split.seed=abc", "split.seed"),
        ("split.nope=1", "split.nope"),
        ("eval.max_users=1.5", "eval.max_users"),
        ("mlflow.enabled=maybe", "mlflow.enabled"),
        ("noequals", "--set"),
    ],
)
def test_bad_values_name_the_key(item, field):
    with pytest.raises(InputError) as err:
        load_config(None, [item])
    assert err.value.field == field


def test_an_asset_triggered_run_takes_the_run_folder_its_event_handed_over():
    from followrec.steps import params_for_run

    params = {"run_dir": "runs/pipeline", "epochs": None}
    handed = [{"run_dir": "/data/runs/a", "snapshot": "3f2a"}]
    assert params_for_run(params, {}, handed)["run_dir"] == "/data/runs/a"
    # A trigger that names its own folder keeps it; a manual run keeps the Param.
    assert params_for_run(params, {"run_dir": "x"}, handed)["run_dir"] == "runs/pipeline"
    assert params_for_run(params, {}, [])["run_dir"] == "runs/pipeline"
    assert params_for_run(params, {}, [{"snapshot": "3f2a"}])["run_dir"] == "runs/pipeline"


def test_site_settings_file_sits_between_defaults_and_the_command(tmp_path, monkeypatch):
    site = tmp_path / "site.yaml"
    site.write_text("feast:\n  online_store: redis\nexperiments:\n  poll_seconds: 5\n")
    monkeypatch.setenv("FOLLOWREC_SETTINGS", str(site))
    run = tmp_path / "config.yaml"
    run.write_text("experiments:\n  alpha: 0.01\n")
    cfg = load_config(run, ["experiments.poll_seconds=1"])
    assert cfg.feast.online_store == "redis"  # from the site file
    assert cfg.experiments.alpha == 0.01  # the run's file keeps the site's other keys
    assert cfg.experiments.poll_seconds == 1  # --set wins
    monkeypatch.setenv("FOLLOWREC_SETTINGS", str(tmp_path / "missing.yaml"))
    with pytest.raises(InputError, match="config file not found"):
        load_config()
