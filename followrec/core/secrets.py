"""Secrets come from the environment or a secrets file, never from the config: a config is
written to config.yaml, logged as MLflow params, copied into reports and printed by
`followrec config`. Settings that hold a connection string name a password as `${VAR}`;
it is expanded only where the connection is made (Feast expands its own YAML)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from followrec.core.errors import InputError

SECRETS_FILE = "FOLLOWREC_SECRETS_FILE"  # KEY=VALUE lines, e.g. FOLLOWREC_API_KEY=...
# Settings that are connection strings and may carry a password.
CONNECTION_FIELDS = (
    "mlflow.tracking_uri",
    "feast.registry",
    "feast.redis_connection",
    "experiments.store",
)
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@:]*:(?P<password>[^@/]*)@", re.I)
_KEY_PASSWORD = re.compile(r"(?:^|,)\s*password=(?P<password>[^,]*)", re.I)
_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


def secret(name: str) -> str | None:
    """$NAME from the environment, else NAME from the file named by $FOLLOWREC_SECRETS_FILE;
    None when neither sets it (an empty value counts as unset)."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(SECRETS_FILE)
    if not path:
        return None
    file = Path(path)
    if not file.is_file():
        raise InputError("secrets file not found", field=SECRETS_FILE, value=path)
    for number, line in enumerate(file.read_text().splitlines(), 1):
        key, sep, value = line.partition("=")
        if line.strip() and not line.lstrip().startswith("#") and not sep:
            raise InputError("expected KEY=VALUE", path=str(file), line=number)
        if key.strip() == name:
            return value.strip() or None
    return None


def check_no_password(field: str, value: str | None) -> None:
    """A connection string may name a password only as a ${VAR} reference."""
    if not value:
        return
    for pattern in (_URL_PASSWORD, _KEY_PASSWORD):
        match = pattern.search(value)
        if match and match.group("password") and not _REFERENCE.match(match.group("password")):
            raise InputError(
                "holds a password: put it in an environment variable and write ${VARIABLE} "
                "in its place (the config is saved, logged to MLflow and printed)",
                field=field,
                value=redact(value),
            )


def redact(value: str) -> str:
    """The connection string with any password replaced by ***."""
    for pattern in (_URL_PASSWORD, _KEY_PASSWORD):
        match = pattern.search(value)
        if match and match.group("password"):
            start, end = match.span("password")
            value = value[:start] + "***" + value[end:]
    return value


def expand(value: str, field: str) -> str:
    """The connection string with its ${VAR} references filled from the environment."""
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value):
        if secret(name) is None:
            raise InputError(f"environment variable {name} is not set", field=field)
        value = value.replace("${" + name + "}", secret(name) or "")
    return value
