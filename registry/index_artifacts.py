"""Index versions are artifacts of the model version they were built for: uploaded to the
version's MLflow run under indexes/<index version>, fetched from there by any host that lacks
them. The local index root is a cache of the registry, not the record."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlflow import MlflowClient

from followrec.core.atomic import atomic_dir
from followrec.core.errors import InputError
from followrec.indexing.store import MANIFEST, folder_of, model_version_of
from followrec.registry.tracking import MODEL_NAME

ARTIFACT_DIR = "indexes"


def _run_id(client: MlflowClient, model_version: str) -> str:
    return client.get_model_version(MODEL_NAME, str(model_version)).run_id


def _checked(model_version: str, index_version: str) -> None:
    if model_version_of(index_version) != str(model_version):
        raise InputError(
            f"index {index_version} was not built for model v{model_version}",
            field="index_version",
            value=index_version,
        )


def upload(client: MlflowClient, model_version: str, root: Path, index_version: str) -> str:
    """Store root/<index_version> with the model version; returns its artifact path.
    Re-uploading the same version (a retried task) writes the same files again."""
    _checked(model_version, index_version)
    path = f"{ARTIFACT_DIR}/{index_version}"
    client.log_artifacts(_run_id(client, model_version), str(folder_of(root, index_version)), path)
    return path


def fetch(client: MlflowClient, model_version: str, root: Path, index_version: str) -> Path:
    """root/<index_version>, downloaded from the model version's artifacts when this host has
    no copy yet (readers of the folder verify its checksum as always)."""
    import mlflow

    _checked(model_version, index_version)
    folder = folder_of(root, index_version)
    if (folder / MANIFEST).exists():
        return folder
    run_id = _run_id(client, model_version)
    if not client.list_artifacts(run_id, f"{ARTIFACT_DIR}/{index_version}"):
        raise InputError(
            f"index {index_version} is neither here nor stored with model v{model_version}",
            path=str(folder),
        )
    with atomic_dir(folder) as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=f"{ARTIFACT_DIR}/{index_version}",
            dst_path=str(tmp / "download"),
            tracking_uri=client.tracking_uri,
        )
        for item in Path(local).iterdir():
            item.replace(tmp / item.name)
        shutil.rmtree(tmp / "download")
    return folder
