"""The `duplex` command line as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SERVER_START_TIMEOUT_S = 60
DUPLEX = [sys.executable, "-m", "actors.cli"]


def test_unknown_command_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "actors.cli", "nonsense"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr


def _missing_directory(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path / "no" / "such" / "dir" / "server.db", "No such file or directory"


def _a_directory(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "server.db"
    path.mkdir()
    return path, "Is a directory"


def _garbage(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "server.db"
    path.write_bytes(bytes(range(256)) * 16)
    return path, "file is not a database"


def _unreadable(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "server.db"
    path.write_bytes(b"")
    path.chmod(0)
    return path, "Permission denied"


@pytest.mark.parametrize(
    "make",
    [
        _missing_directory,
        _a_directory,
        _garbage,
        pytest.param(
            _unreadable,
            marks=pytest.mark.skipif(
                os.geteuid() == 0, reason="root reads any file whatever its mode"
            ),
        ),
    ],
    ids=["missing directory", "a directory", "garbage", "no read permission"],
)
def test_duplex_server_on_a_bad_database_says_so_in_one_line(
    tmp_path: Path, make: Callable[[Path], tuple[Path, str]]
) -> None:
    path, words = make(tmp_path)
    try:
        done = subprocess.run(
            [*DUPLEX, "server", "--db", f"sqlite:///{path}", "--port", "0"],
            capture_output=True,
            text=True,
            timeout=SERVER_START_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # it started a server on that database
        raise AssertionError(f"duplex server ran on {path}: {exc.stdout!r}") from None
    assert done.returncode != 0
    assert done.stdout == "", "printed an address"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("duplex server: STORAGE"), lines[0]
    assert f"cannot open {path}: {words}" in lines[0]
