"""Setting duplex up as a new user or a CI machine does: `make` with the wrong Python leaves
nothing half-made behind, and `.ci/run` makes the PostgreSQL database it uses."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

# A stand-in Python of the version given: answers `-c` with that version_info, makes a "venv"
# that is a copy of itself, and as a venv's python fails to install duplex as pip would.
FAKE_PYTHON = """#!/bin/sh
if [ "$1" = "-c" ]; then
    exec {real} -c "import sys; sys.version_info = {version!r}; $2"
fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
echo "ERROR: Could not install packages due to an OSError" >&2
exit 1
"""


def _fake_python(tmp_path: Path, version: tuple[int, ...]) -> Path:
    python = tmp_path / f"python{'.'.join(map(str, version))}"
    python.write_text(FAKE_PYTHON.format(real=sys.executable, version=(*version, "final", 0)))
    python.chmod(0o755)
    return python


def _make(tmp_path: Path, python: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", f"PYTHON={python}", "lint"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_with_a_python_too_old_says_so_and_makes_no_venv(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, (3, 10, 12))
    for _ in range(2):  # and the same again: nothing was left to reuse
        done = _make(tmp_path, python)
        assert done.returncode != 0
        assert f"duplex needs Python 3.11 or newer; {python} is 3.10.12" in done.stderr
        assert not (tmp_path / "venv").exists()


def test_make_whose_first_install_fails_removes_the_venv_it_made(tmp_path: Path) -> None:
    done = _make(tmp_path, _fake_python(tmp_path, (3, 12, 1)))
    assert done.returncode != 0
    assert "Could not install" in done.stderr
    assert not (tmp_path / "venv").exists(), "a half-made venv that the next make would reuse"


# ------------------------------------------------------------------------------- .ci/run


def _ci_run(tmp_path: Path, **env: str) -> list[str]:
    """Run .ci/run with a `make` that only reports the PostgreSQL URL the tests would get."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "make").write_text('#!/bin/sh\necho "make $1 url=${DUPLEX_TEST_POSTGRES_URL:-}"\n')
    (fake / "make").chmod(0o755)
    environment = {k: v for k, v in os.environ.items() if k != "DUPLEX_TEST_POSTGRES_URL"}
    environment.update(env, PATH=f"{fake}:{os.environ['PATH']}")
    done = subprocess.run(
        [str(ROOT / ".ci" / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _postgres_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), 2).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not VENV_PYTHON.exists(), reason=".ci/run uses .venv's psycopg")
@pytest.mark.skipif(not _postgres_answers(), reason="no PostgreSQL on 127.0.0.1:5432")
def test_ci_makes_a_postgres_database_of_its_own_and_the_tests_use_it(tmp_path: Path) -> None:
    lines = _ci_run(tmp_path, DUPLEX_CI_DATABASE="duplex_ci_check")
    url = "postgresql://postgres@127.0.0.1:5432/duplex_ci_check"
    assert lines[-1] == f"make test url={url}", lines
    import psycopg

    with psycopg.connect(url) as made:  # it exists
        assert made.execute("SELECT current_database()").fetchone() == ("duplex_ci_check",)
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as s:
        s.execute("DROP DATABASE IF EXISTS duplex_ci_check WITH (FORCE)")


@pytest.mark.skipif(not VENV_PYTHON.exists(), reason=".ci/run uses .venv's psycopg")
def test_ci_without_postgres_runs_the_tests_without_it(tmp_path: Path) -> None:
    lines = _ci_run(tmp_path, DUPLEX_CI_POSTGRES="postgresql://postgres@127.0.0.1:1/postgres")
    assert "no usable PostgreSQL (above): its tests skip" in lines
    assert lines[-1] == "make test url=", lines
