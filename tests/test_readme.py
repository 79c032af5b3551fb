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


def test_the_first_example_prints_the_tree_it_shows() -> None:
    # The example prints the supervision tree rendered, not a TreeNode(...) repr.
    text = README.read_text()
    kernel = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    shown = re.search(r"```python\n.*?```\n\nprints\n\n```text\n(.*?)```", text, re.S)
    assert shown is not None, "the README shows what the first example prints"
    done = subprocess.run(
        [sys.executable, "-c", kernel], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "TreeNode(" not in done.stdout
    assert done.stdout == shown.group(1)
