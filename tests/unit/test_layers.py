"""The rooms import top-down only (the import-linter contract in pyproject.toml).

Each room keeps its top-level folder but installs as followrec.<room> (setuptools
package-dir), and import-linter walks one package folder; so the check runs on a mirror
where every room sits inside followrec/, exactly as an installed wheel lays it out."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def mirror(target: Path) -> Path:
    """The installed layout of the followrec package, copied under target."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    rooms = {"followrec": "followrec", **setup["package-dir"]}
    for package, folder in rooms.items():
        shutil.copytree(
            REPO / folder,
            target / package.replace(".", "/"),
            ignore=shutil.ignore_patterns("__pycache__", "*.yaml"),
            dirs_exist_ok=True,
        )
    return target


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": str(LINT_IMPORTS.parent)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_room_imports_only_rooms_below_it(tmp_path):
    result = lint_imports(mirror(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rooms read top-down KEPT" in result.stdout


def test_a_planted_upward_import_breaks_the_contract(tmp_path):
    root = mirror(tmp_path)
    (root / "followrec" / "features" / "planted.py").write_text(
        "from followrec.serving import candidates  # features reaching up into serving\n"
    )
    result = lint_imports(root)
    assert result.returncode != 0
    assert "rooms read top-down BROKEN" in result.stdout
    assert "followrec.features.planted -> followrec.serving.candidates" in result.stdout
