"""`duplex bench` as a user meets it: Ctrl-C ends it in one line, and its figures read as a
table on a terminal and as progress lines when piped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ctrl_c_during_a_bench_is_one_line_and_status_130() -> None:
    # bench.server starts a queue server and peer processes at once: a Ctrl-C reaching them
    # mid-import printed their tracebacks. The terminal signals the whole foreground process
    # group, as killpg does here.
    bench = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "bench", "server", "--quick"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    time.sleep(2.5)  # into the start of its helper processes
    os.killpg(bench.pid, signal.SIGINT)
    out, err = bench.communicate(timeout=60)
    assert bench.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "duplex bench server: interrupted"
    assert out == ""
