"""Secrets are never written down: after a pipeline run and a service that used both keys
and a password reference, no file under the run's folder, no MLflow param or tag and no
log line holds any of them."""

from __future__ import annotations

import httpx
import pytest

from followrec.cli import main
from followrec.registry.tracking import MODEL_NAME, registry_client
from tests.serving.conftest import ADMIN_KEY, API_KEY, PLANTED_PASSWORD

pytestmark = pytest.mark.slow
SECRETS = (API_KEY, ADMIN_KEY, PLANTED_PASSWORD)


def test_no_secret_in_any_file_param_tag_or_log(pipeline_run, service, capsys):
    admin = {"X-API-Key": ADMIN_KEY}
    assert httpx.get(f"{service}/v1/users/3/candidates", headers={"X-API-Key": API_KEY}).is_success
    assert httpx.get(f"{service}/v1/admin/status", headers=admin).is_success
    assert httpx.get(f"{service}/v1/users/3/candidates", headers={"X-API-Key": "nope"}).status_code
    assert main(["config", "--config", str(pipeline_run / "config.yaml")]) == 0
    printed = capsys.readouterr()
    # The run's folder and the service logs beside it: every file, binary ones included.
    files = [p for p in pipeline_run.parent.rglob("*") if p.is_file()]
    assert len(files) > 50
    for path in files:
        data = path.read_bytes()
        for planted in SECRETS:
            assert planted.encode() not in data, f"{planted!r} written to {path}"
    assert "${FOLLOWREC_REDIS_PASSWORD}" in (pipeline_run / "config.yaml").read_text()
    client = registry_client(f"sqlite:///{pipeline_run / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    recorded = [str(r.data.params) + str(r.data.tags) for r in runs]
    recorded += [str(v.tags) for v in client.search_model_versions(f"name='{MODEL_NAME}'")]
    assert runs and all(planted not in text for text in recorded for planted in SECRETS)
    assert all(planted not in printed.out + printed.err for planted in SECRETS)


def test_a_password_written_into_a_setting_is_refused_naming_the_setting(capsys):
    url = "postgresql+psycopg://followrec:hunter2@127.0.0.1:5432/mlflow"
    assert main(["config", "--set", f"mlflow.tracking_uri={url}"]) == 2
    err = capsys.readouterr().err
    assert "field 'mlflow.tracking_uri'" in err and "hunter2" not in err
    assert main(["config", "--set", "serving.api_key=abc"]) == 2
    assert "$FOLLOWREC_API_KEY" in capsys.readouterr().err
