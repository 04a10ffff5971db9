"""MLflow tracking for a run: one parent run per evaluation, a nested run per trained model,
registration of the model under `followrec-two-tower`. A disabled tracker does nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from followrec.core.secrets import expand

MODEL_NAME = "followrec-two-tower"
ENV_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


# The tracking server followrec starts (`followrec ui`, `followrec deploy`): MLflow 3 also
# starts a job runner (Huey consumers for GenAI judges and scheduled scorers) that polls its
# database in several busy processes; followrec runs no server-side jobs, so it stays off.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def tracking_uri(configured: str | None, out_dir: Path) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else a SQLite file in the run folder."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(out_dir / 'mlflow.db').resolve()}"


def resolved(uri: str) -> str:
    """The URI MLflow connects to: ${VAR} password references filled in. Only MLflow calls
    see it; what is stored or printed keeps the reference."""
    return expand(uri, "mlflow.tracking_uri")


def registry_client(uri: str):  # noqa: ANN201 - mlflow is imported lazily
    """An MLflow client whose tracking and registry are both `uri`."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=resolved(uri), registry_uri=resolved(uri))


def flat_metrics(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    """Numeric entries as MLflow metric names (`@` is not allowed there)."""
    return {
        f"{prefix}{key.replace('@', '_at_')}": float(value)
        for key, value in values.items()
        if isinstance(value, int | float)
    }


def ensure_experiment(client: Any, uri: str, name: str, run_dir: Path) -> str:
    """The experiment's id, created on first use. Artifacts go to $MLFLOW_ARTIFACT_LOCATION
    (e.g. s3://bucket/followrec in production), else to a tracking server's own artifact
    store, else beside a SQLite database, else into RUN/mlartifacts: never into the working
    directory."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = os.environ.get("MLFLOW_ARTIFACT_LOCATION")
    if not location and uri.startswith(("http://", "https://")):
        return client.create_experiment(name)  # the tracking server stores (serves) them
    if not location and uri.startswith("sqlite:"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    elif not location:
        location = (Path(run_dir) / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def log_validation(
    uri: str, experiment: str, name: str, results: Path, docs: Path, success: bool
) -> str:
    """A run holding a validation's results JSON and its Data Docs site; returns its id."""
    client = registry_client(uri)
    run = client.create_run(
        ensure_experiment(client, uri, experiment, results.parent.parent),
        run_name=name,
        tags={"followrec.step": name, "validation.success": str(success)},
    )
    if results.exists():
        client.log_artifact(run.info.run_id, str(results), "validation")
    if docs.exists():
        client.log_artifacts(run.info.run_id, str(docs), "data_docs")
    client.log_metric(run.info.run_id, "validation_success", float(success))
    client.set_terminated(run.info.run_id, "FINISHED" if success else "FAILED")
    return run.info.run_id


class Tracker:
    """Context manager around the parent MLflow run."""

    def __init__(
        self,
        enabled: bool,
        uri: str,
        experiment: str,
        out_dir: Path,
        run_name: str,
        resume_run_id: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.uri = uri
        self.experiment = experiment
        self.out_dir = out_dir
        self.run_name = run_name
        self.run_id: str | None = None
        self.resume_run_id = resume_run_id
        self._saved_env: dict[str, str | None] = {}

    def __enter__(self) -> Tracker:
        if not self.enabled:
            return self
        import mlflow

        # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; restore it on exit so
        # the next run in this process resolves its own store.
        self._saved_env = {k: os.environ.get(k) for k in ENV_KEYS}
        mlflow.set_tracking_uri(resolved(self.uri))
        # The registry URI can outlive a previous tracking URI in the same process; pin it.
        mlflow.set_registry_uri(resolved(self.uri))
        experiment_id = ensure_experiment(
            registry_client(self.uri), self.uri, self.experiment, self.out_dir
        )
        mlflow.set_experiment(experiment_id=experiment_id)  # nested runs land here too
        if self.resume_run_id:  # a later step of the same pipeline run
            self.run_id = mlflow.start_run(run_id=self.resume_run_id).info.run_id
        else:
            self.run_id = mlflow.start_run(run_name=self.run_name).info.run_id
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if self.enabled:
            import mlflow

            mlflow.end_run("FAILED" if exc_type else "FINISHED")
            mlflow.set_registry_uri(None)
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    @contextmanager
    def child(self, name: str, run_id: str | None = None) -> Iterator[str | None]:
        """A nested run (new, or resumed by id), or None when tracking is off."""
        if not self.enabled:
            yield None
            return
        import mlflow

        with mlflow.start_run(run_id=run_id, run_name=None if run_id else name, nested=True) as run:
            yield run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Parameters of the active run (values cut to MLflow's length limit)."""
        if self.enabled:
            import mlflow

            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Metrics of the active run."""
        if self.enabled and metrics:
            import mlflow

            mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: Path, run_id: str | None = None) -> None:
        """A file as an artifact of the active (or given) run."""
        if self.enabled:
            import mlflow

            if run_id is None:
                mlflow.log_artifact(str(path))
            else:
                registry_client(self.uri).log_artifact(run_id, str(path))

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Tags of the active run."""
        if self.enabled:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_model(
        self, model_dir: Path, example: Any, register: bool, tags: dict[str, Any]
    ) -> str | None:
        """Log the consumer-tower pyfunc (code + state dict + JSON) in the active run;
        register it as MODEL_NAME when asked. Returns the registered version."""
        if not self.enabled:
            return None
        import mlflow
        import torch
        from mlflow.models import infer_signature

        from followrec.training import mlflow_model
        from followrec.training.mlflow_model import TwoTowerConsumer
        from followrec.training.model_io import load_model_dir

        trained = load_model_dir(model_dir)
        scorer = TwoTowerConsumer()
        scorer.trained = trained
        signature = infer_signature(example, scorer.predict(None, example))
        code = Path(mlflow_model.__file__).resolve()
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={"model_dir": str(model_dir)},
            signature=signature,
            input_example=example,
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                "pandas",
                "numpy",
                f"mlflow=={mlflow.__version__}",
            ],
            registered_model_name=MODEL_NAME if register else None,
        )
        if not register:
            return None
        version = str(info.registered_model_version)
        client = registry_client(self.uri)
        for key, value in tags.items():
            client.set_model_version_tag(MODEL_NAME, version, key, str(value))
        return version
