"""`duplex demo`: its checks hold in CI through the same code path `make demo` runs, twice on
one work directory (the second run reopens the servers and clients the first one stored, the
relays' addresses and the relay group of the first run included; each run kills a member's
client process with SIGKILL and checks what it had on its way arrives once),
a work directory it cannot use is one line, Ctrl-C is one line and status 130, and
`--console` serves a debug endpoint `duplex tree` can read until Ctrl-C."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from actors.demo import run_demo

DUPLEX = [sys.executable, "-m", "actors.cli"]


def _demo(workdir: Path | None, **options: object) -> tuple[int, str]:
    out = io.StringIO()
    code = run_demo(workdir, console=Console(file=out, width=120), **options)
    return code, out.getvalue()


def test_every_check_holds_and_again_on_the_same_workdir(tmp_path: Path) -> None:
    workdir = tmp_path / "new" / "dir"  # made by the demo
    code, first = _demo(workdir)
    assert code == 0, first
    assert "✗" not in first and "demo ok: every check held" in first
    assert "restarts=1" in first  # the crash shows in the printed tree
    assert "every member's view says 2/2 relays active" in first
    assert "each relay's own roster holds eve as LEFT" in first
    _killed_and_back(first)
    assert (workdir / "demo.json").exists() and (workdir / "owner.db").exists()

    code, second = _demo(workdir)
    assert code == 0, second
    assert "✗" not in second and "demo ok: every check held" in second
    assert "serves its address of the previous run" in second
    assert "contacts of the previous run found again" in second
    assert "the group of an earlier run is still there" in second
    assert "the relay addresses of the previous run found again" in second
    assert "the relay group of an earlier run still delivers" in second
    _killed_and_back(second)


def _killed_and_back(out: str) -> None:
    """The kill act held: a member's client ran in a process of its own, was killed with
    SIGKILL with a delivery pending, and its client, reopened from its file, delivered that
    message once and got what was sent meanwhile."""
    flat = " ".join(out.split())  # the console wraps long claims
    pid = re.search(r"✓ eve's client closed here; its own Python process \(pid (\d+)\)", flat)
    assert pid is not None, out
    assert "the delivery to the owner waits in its database (1 pending)" in flat
    assert f"✓ SIGKILL sent to pid {pid.group(1)}, still running" in flat
    assert "(exit status -9)" in flat
    assert "✓ eve's client reopened in the demo's process from eve.db" in flat
    assert "✓ eve is back in the group" in flat
    assert not _running(int(pid.group(1)))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_smaller_cast_plays_the_same_acts(tmp_path: Path) -> None:
    code, out = _demo(None, members=1)
    assert code == 0, out
    assert "✗" not in out and "An owner and 1 member," in out
    flat = " ".join(out.split())
    assert "ann's client closed here; its own Python process" in flat  # the only member
    assert "✓ ann is back in the group" in flat


def test_a_workdir_it_cannot_make_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess.run(
        [*DUPLEX, "demo", "--workdir", str(blocker / "below")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cannot use" in done.stderr, done.stderr


# `duplex` with Ctrl-C raising KeyboardInterrupt, as in a terminal: a test run as a
# background job inherits SIGINT ignored, and Python then leaves it ignored.
INTERACTIVE_DUPLEX = [
    sys.executable,
    "-c",
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from actors.cli import main; sys.exit(main(sys.argv[1:]))",
]


def _start(tmp_path: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*INTERACTIVE_DUPLEX, "demo", "--workdir", str(tmp_path), "--members", "1", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(demo: subprocess.Popen[str], text: str) -> list[str]:
    lines = []
    assert demo.stdout is not None
    for line in demo.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never printed: {''.join(lines)}")


def test_ctrl_c_is_one_line_and_status_130(tmp_path: Path) -> None:
    demo = _start(tmp_path)
    try:
        _read_until(demo, "Two queue servers")
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    finally:
        demo.kill()
    assert demo.returncode == 130
    assert err == "duplex demo: interrupted\n"


def test_a_reader_that_goes_away_ends_it_with_nothing_left_running(tmp_path: Path) -> None:
    """`duplex demo | head`: once the pipe is closed, the next print ends the demo (status
    1, as rich ends a program whose output pipe broke), its clients and servers closed —
    before, their threads kept the process alive for good."""
    demo = _start(tmp_path)
    try:
        assert demo.stdout is not None
        for _ in range(20):  # into the acts: clients open, as `duplex demo | head -20`
            assert demo.stdout.readline(), "the demo ended before 20 lines"
        demo.stdout.close()
        demo.wait(timeout=60)
    finally:
        demo.kill()
    assert demo.returncode == 1


def test_console_keeps_it_running_with_an_endpoint_to_attach_to(tmp_path: Path) -> None:
    from actors.debug import fetch_snapshot

    demo = _start(tmp_path, "--console")
    try:
        lines = _read_until(demo, "Ctrl-C stops the demo")
        attach = next(line for line in lines if "owner: duplex console" in line).split()
        url, token_file = attach[3], Path(attach[5])
        snapshot = fetch_snapshot(url, token_file, timeout=20)
        assert snapshot.tree.find("client/chat/groups") is not None
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        demo.kill()
    assert demo.returncode == 0, err
    assert "demo ok: every check held" in out and "✗" not in "".join(lines) + out
    assert not token_file.exists()  # removed when the client closed
