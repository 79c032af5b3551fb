"""`make test-loaded`: the whole suite, several times, while busy loops hold every core.

A test that passes alone but fails when the machine is busy has a race or a timing
assumption; this is how such tests are found. It starts one busy-loop process per core
(`os.cpu_count()`, at least two), runs `python -m pytest` `--runs` times one after the other,
prints each run's closing line and a summary (and, for a run that failed, the file that keeps
its whole output), stops the loops, and exits non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _spin() -> None:
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest")
    options = parser.parse_args()
    loops = [
        multiprocessing.Process(target=_spin, daemon=True)
        for _ in range(max(2, os.cpu_count() or 2))
    ]
    for loop in loops:
        loop.start()
    outcomes: list[tuple[int, float, str]] = []
    try:
        for run in range(1, options.runs + 1):
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "pytest", *options.pytest_args],
                capture_output=True,
                text=True,
                check=False,
            )
            elapsed = time.monotonic() - started
            lines = done.stdout.strip().splitlines()
            summaries = [line for line in lines if re.search(r"\d+ (passed|failed|error)", line)]
            closing = (summaries or lines or ["(no output)"])[-1]
            outcomes.append((done.returncode, elapsed, closing))
            print(
                f"loaded run {run}/{options.runs}: exit {done.returncode} in {elapsed:.0f}s: "
                f"{closing}",
                flush=True,
            )
            if done.returncode != 0:
                failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
                print("\n".join(failures or lines[-40:]), flush=True)
                # a race seen once may not come back: keep the whole run's tracebacks
                kept = Path(tempfile.gettempdir()) / f"duplex-loaded-run-{os.getpid()}-{run}.log"
                kept.write_text(done.stdout + done.stderr)
                print(f"its whole output: {kept}", flush=True)
    finally:
        for loop in loops:
            loop.terminate()
    failed = sum(1 for code, _, _ in outcomes if code != 0)
    print(f"test-loaded: {len(outcomes) - failed} runs passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
