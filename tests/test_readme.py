"""The README's embedded example runs as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_examples_run() -> None:
    kernel, agents, group = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    for example, expected in (
        (kernel, "hello bob from en (#2)"),
        (agents, "b'hello bob'"),
        (group, "hi all"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", example],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout
