"""`duplex bench` as a user meets it: Ctrl-C ends it in one line, and its figures read as a
table on a terminal and as progress lines when piped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench._report import PipedProgress, Report, progress

ROOT = Path(__file__).resolve().parent.parent


def test_ctrl_c_during_a_bench_is_one_line_and_status_130() -> None:
    # bench.server starts a queue server and peer processes at once: a Ctrl-C reaching them
    # mid-import printed their tracebacks. The terminal signals the whole foreground process
    # group, as killpg does here.
    # A shell starts a background job with SIGINT ignored, and children inherit an ignored
    # signal (Python then installs no KeyboardInterrupt): the bench gets the default, as
    # from a terminal, however this test was started.
    ignoring = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        bench = subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "bench", "server", "--quick"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
    finally:
        signal.signal(signal.SIGINT, ignoring)
    # Interrupt it once it measures (trio nurseries running, helper processes up): wait for
    # that phase's progress line on stderr.
    seen = []
    deadline = time.monotonic() + 60
    while not any("SEND→MSG→ACK" in line and "started" in line for line in seen):
        assert time.monotonic() < deadline and bench.poll() is None, seen
        seen.append(bench.stderr.readline())
    os.killpg(bench.pid, signal.SIGINT)
    out, rest = bench.communicate(timeout=60)
    err = "".join(seen) + rest
    assert bench.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "duplex bench server: interrupted"
    assert out == ""


def _report() -> Report:
    report = Report("demo")
    report.add("tell_per_s", 81234.5, "msg/s")
    report.add("ratio", 0.4567)
    report.add("target_met", True)
    return report


def test_figures_on_a_terminal_are_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    _report().emit(False, as_table=True)
    out = capsys.readouterr().out
    assert "bench.demo" in out and "┃ figure" in out
    rows = [" ".join(line.strip("│ ").split()) for line in out.splitlines() if "│" in line]
    assert "tell_per_s │ 81234 │ msg/s" in rows, rows
    assert any(row.startswith("target_met │ yes") for row in rows), rows


def test_figures_piped_are_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    _report().emit(False, as_table=False)
    assert capsys.readouterr().out.splitlines() == [
        "demo.tell_per_s 81234 msg/s",
        "demo.ratio 0.457",
        "demo.target_met yes",
    ]


def test_progress_piped_says_something_every_few_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines: list[str] = []

    def running() -> list[str]:
        lines.extend(capsys.readouterr().err.splitlines())
        return [line for line in lines if line.startswith("send 3 messages: running, 1/3 in")]

    with progress(live=False, every=0.05) as bars:
        assert isinstance(bars, PipedProgress)
        task = bars.add_task("[bold]send 3 messages", total=3)
        bars.advance(task)
        deadline = time.monotonic() + 10
        while len(running()) < 2:  # a long step with no advance: lines keep coming
            assert time.monotonic() < deadline, lines
            time.sleep(0.01)
        bars.advance(task, 2)
        other = bars.add_task("drain", total=10)
        bars.remove_task(other)
    running()
    assert lines[0] == "send 3 messages: started, 3 to do"
    assert any(line.startswith("send 3 messages: done, 3/3 in") for line in lines), lines
    assert lines[-1].startswith("drain: stopped, 0/10 in"), lines


def test_progress_is_off_with_json(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(enabled=False, live=False, every=0.01) as bars:
        bars.advance(bars.add_task("quiet", total=1))
        time.sleep(0.05)
    assert capsys.readouterr().err == ""
