"""docker/: what can be checked without a Docker daemon. The compose file against the
Compose specification (the pinned `compose-spec` validator, after YAML merge keys are
resolved as Compose resolves them), the Dockerfile with hadolint, the secrets story, and
that the slim serving image's code needs neither Airflow nor Great Expectations."""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _validate(spec: dict) -> PyCompose:
    return PyCompose.from_json(json.dumps(spec))


def test_compose_file_follows_the_compose_specification():
    spec = _compose()
    services = set(_validate(spec).service_names())
    assert {"postgres", "redis", "rabbitmq", "mlflow", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "airflow-worker-1", "airflow-worker-2",
            "serve-1", "serve-2"} <= services  # fmt: skip
    broken = copy.deepcopy(spec)
    broken["services"]["redis"]["restrat"] = "always"  # the validator does bite
    with pytest.raises(ValueError, match="restrat"):
        _validate(broken)


def test_every_long_running_service_has_a_healthcheck_and_workers_use_celery():
    services = _compose()["services"]
    for name, service in services.items():
        if name != "airflow-init":
            assert "healthcheck" in service or name.startswith("serve"), name
    # The serving image declares its own HEALTHCHECK (GET /readyz).
    assert "HEALTHCHECK" in (DOCKER / "Dockerfile").read_text()
    for worker in ("airflow-worker-1", "airflow-worker-2"):
        assert services[worker]["command"][:2] == ["celery", "worker"]
        assert services[worker]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_no_secret_is_written_down_and_make_env_generates_every_one(tmp_path):
    lines = (DOCKER / "compose.yaml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    referenced = set(re.findall(r"\$\{([A-Z_0-9]+)", text))
    for line in text.splitlines():  # a password or key is only ever a ${VARIABLE}
        if re.match(r"^\s*[A-Z_0-9]*(PASSWORD|PASS|SECRET|_KEY):\s", line):
            assert "${" in line or "$$" in line, line
    env_file = tmp_path / ".env"
    done = subprocess.run([sys.executable, str(DOCKER / "make_env.py"), "--out", str(env_file)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert referenced <= set(written), referenced - set(written)
    assert all(len(v) >= 32 for v in written.values())
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    again = subprocess.run([sys.executable, str(DOCKER / "make_env.py"), "--out", str(env_file)],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 1 and "exists" in again.stderr  # never silently replaced
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "docker/.env must be git-ignored"
    settings = (DOCKER / "followrec.production.yaml").read_text()
    assert "password=${FOLLOWREC_REDIS_PASSWORD}" in settings


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), "--no-color", str(DOCKER / "Dockerfile")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_serving_image_needs_neither_airflow_nor_great_expectations():
    pinned = {
        line.split("==")[0].lower()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    wanted = [
        re.split(r"[\[=<>]", line)[0].lower()
        for line in (DOCKER / "requirements-serving.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert set(wanted) <= pinned, set(wanted) - pinned
    assert not {"apache-airflow", "great-expectations"} & set(wanted)
    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("airflow", "great_expectations"):
            raise ImportError("not in the serving image: " + name)
sys.meta_path.insert(0, Block())
from followrec.cli import build_parser
from followrec.serving.server import build_app
import followrec.serving.candidates, followrec.serving.experiments
build_parser().parse_args(["serve", "--run", "x"])
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
