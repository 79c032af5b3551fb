"""`run_demo`: the demo from start to verdict — the work directory (a temporary one, or
`--workdir` kept for a second run), the acts in order (actors/demo/acts.py), the final
claim that nothing of the runtimes is left running, and the exit status: 0 only if every
claim held, 130 after Ctrl-C (one line, whatever act it interrupted).

With `keep_running` (`--console`) the clients serve the debug endpoint and, after the
acts, the demo waits for Ctrl-C with the command to attach `duplex console` printed.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from actors.demo.acts import ACTS
from actors.demo.stage import MEMBER_NAMES, OWNER, ActFailed, Checks, Stage, until
from actors.kernel import KernelError
from protocol.errors import DuplexError

INTERRUPTED = 130  # the shell's status for a command ended by SIGINT


def run_demo(
    workdir: Path | None = None,
    *,
    members: int = len(MEMBER_NAMES),
    console: Console | None = None,
    keep_running: bool = False,
) -> int:
    """Play the demo; returns the exit status. `members` (1 to 5) makes the cast smaller for
    the tests; the acts are the same."""
    console = console or Console(highlight=False)
    checks = Checks(console)
    threads_before = set(threading.enumerate())
    started = time.monotonic()
    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"duplex demo: cannot use {workdir}: {exc.strerror}", file=sys.stderr)
            return 2
    with _workdir(workdir) as where:
        stage = Stage(where, console, checks, MEMBER_NAMES[:members], debug=keep_running)
        try:
            again = " (again: reopening what the last run stored)" if stage.second_run else ""
            console.rule("[bold]duplex demo")
            console.print(f"work directory: {where}{again}")
            _play(stage)
            if keep_running:
                _wait_for_console(stage)
        except KeyboardInterrupt:
            _quietly(stage)
            print("duplex demo: interrupted", file=sys.stderr)
            return INTERRUPTED
        except BaseException:
            # Whatever ends the play early closes every client and server first, or their
            # threads keep the process alive: rich's SystemExit(1) when whoever read our
            # output went away (`duplex demo | head`), or a bug's traceback.
            _quietly(stage)
            raise
        _quietly(stage)
    console.print("\n[bold]Shutdown")
    gone = until(lambda: not _left_running(threads_before), timeout=5.0)
    left = ", ".join(sorted(t.name for t in _left_running(threads_before)))
    checks.check(
        f"every client and server closed: no runtime thread is left running {left}".strip(), gone
    )
    took = time.monotonic() - started
    if checks.failed:
        console.print(f"\n[red bold]demo failed: {len(checks.failed)} check(s) did not hold")
        return 1
    console.print(f"\n[green bold]demo ok: every check held[/] ({took:.0f} s)")
    return 0


def _left_running(before: set[threading.Thread]) -> list[threading.Thread]:
    # trio keeps a worker of `to_thread` (the debug endpoint's, after a console attached)
    # idle for 10 s before it ends by itself: a cache of trio's, not a runtime's thread
    return [
        t
        for t in threading.enumerate()
        if t not in before and not (t.daemon and t.name.startswith("Trio thread"))
    ]


def _play(stage: Stage) -> None:
    for act in ACTS:
        try:
            act(stage)
        except ActFailed:
            stage.console.print("  [red]the acts after this one need what it failed to show")
            return
        except (DuplexError, KernelError) as exc:  # a refused call, an actor not live: one line
            stage.checks.check(f"{act.__name__} raised {type(exc).__name__}: {exc}", False)
            return
    stage.state["runs"] = stage.state.get("runs", 0) + 1
    stage.save_state()


def _wait_for_console(stage: Stage) -> None:
    try:
        stage.console.print("\n[bold]Still running, with the debug endpoint on. Attach with:")
        for name in stage.cast:
            endpoint = stage.clients[name].agent.debug_endpoint
            if endpoint is not None:
                command = f"duplex console {endpoint.url} --token-file {endpoint.token_file}"
                stage.console.print(f"  {name:>7}: {command}", soft_wrap=True)
        stage.console.print(f"(the {OWNER}'s is the fullest tree) Ctrl-C stops the demo")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:  # the way out of --console: the verdict is the checks'
        stage.console.print("stopping")


def _quietly(stage: Stage) -> None:
    """Close every client and server; a second Ctrl-C meanwhile is ignored, so the user
    never gets a traceback from half-closed threads."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stage.close_all()
        stage.servers.stop_all()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _workdir(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        yield workdir.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="duplex-demo-") as tmp:
        yield Path(tmp)
