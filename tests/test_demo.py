"""`duplex demo`: its checks hold in CI through the same code path `make demo` runs, twice on
one work directory (the second run reopens the servers and clients the first one stored, the
relays' addresses and the relay group of the first run included),
a work directory it cannot use is one line, Ctrl-C is one line and status 130, and
`--console` serves a debug endpoint `duplex tree` can read until Ctrl-C."""

from __future__ import annotations

import io
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
    assert (workdir / "demo.json").exists() and (workdir / "owner.db").exists()

    code, second = _demo(workdir)
    assert code == 0, second
    assert "✗" not in second and "demo ok: every check held" in second
    assert "serves its address of the previous run" in second
    assert "contacts of the previous run found again" in second
    assert "the group of an earlier run is still there" in second
    assert "the relay addresses of the previous run found again" in second
    assert "the relay group of an earlier run still delivers" in second


def test_a_smaller_cast_plays_the_same_acts(tmp_path: Path) -> None:
    code, out = _demo(None, members=1)
    assert code == 0, out
    assert "✗" not in out and "An owner and 1 member," in out


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
