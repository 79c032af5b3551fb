"""The `duplex` command line as a user runs it."""

from __future__ import annotations

import subprocess
import sys


def test_duplex_demo_exits_zero_with_every_check_held() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "actors.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo ok: every check held" in done.stdout
    assert "✗" not in done.stdout
    assert "restarts=1" in done.stdout  # the crash and its restart show in the printed tree


def test_unknown_command_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "actors.cli", "nonsense"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr
