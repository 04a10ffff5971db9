"""Write docker/.env with freshly generated secrets for docker/compose.yaml.

    python docker/make_env.py            # refuses to overwrite an existing docker/.env
    python docker/make_env.py --force    # new secrets (existing volumes keep the old ones)

The file is git-ignored and created readable by its owner only; nothing in the repository
holds a default password."""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

NAMES = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "RABBITMQ_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_ADMIN_PASSWORD",
    "FOLLOWREC_API_KEY",
    "FOLLOWREC_ADMIN_API_KEY",
)


def generate() -> dict[str, str]:
    values = {name: secrets.token_urlsafe(24) for name in NAMES}
    values["AIRFLOW_FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / ".env"))
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"{out} exists; keep it, or pass --force for new secrets", file=sys.stderr)
        return 1
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{name}={value}\n" for name, value in generate().items())
    print(f"wrote {out} ({len(NAMES) + 1} secrets, mode 600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
