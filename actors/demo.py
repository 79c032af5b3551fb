"""`duplex demo`: run a small runtime on the embedded SQLite default and check what it shows.

At this stage of the project the demo exercises the kernel: persisted virtual actors on a
SQLite file in a temporary directory, a crash on purpose and its restart from stored state,
passivation and reactivation, the supervision tree, and a clean shutdown with no thread left.
Every claim it prints is checked; the exit status is 0 only if every check held.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from actors.demo_tally import TALLY_MIGRATIONS, Add, CrashOnPurpose, Read, TallyActor
from actors.kernel import Runtime, RuntimeConfig, virtual_supervisor_spec
from storage.database import open_database


class Checks:
    """Prints each claim with a mark and remembers whether all of them held."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.failed: list[str] = []

    def check(self, claim: str, held: bool) -> None:
        mark = "[green]✓[/]" if held else "[red]✗[/]"
        self.console.print(f"  {mark} {claim}")
        if not held:
            self.failed.append(claim)


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run_demo(workdir: Path | None = None, console: Console | None = None) -> int:
    console = console or Console()
    checks = Checks(console)
    threads_before = set(threading.enumerate())
    with tempfile.TemporaryDirectory(prefix="duplex-demo-") as tmp:
        path = (workdir or Path(tmp)) / "demo.db"
        url = f"sqlite:///{path}"
        console.rule("[bold]duplex demo: the actor kernel")
        console.print(f"database: {url}")
        db = open_database(url, migrations=TALLY_MIGRATIONS)
        try:
            spec = virtual_supervisor_spec("tallies", TallyActor)
            config = RuntimeConfig(passivate_after=0.5)
            with Runtime.start([spec], database=db, config=config) as runtime:
                console.print("\n[bold]1. Virtual actors activate on their first message")
                for name, amount in (("alice", 3), ("bob", 5), ("carol", 7)):
                    for _ in range(amount):
                        runtime.tell(f"client/tallies/{name}", Add(1))
                counts = {n: runtime.ask(f"client/tallies/{n}", Read()) for n in ("alice", "bob")}
                checks.check(
                    f"alice counted 3 and bob 5: {counts}", counts == {"alice": 3, "bob": 5}
                )

                console.print("\n[bold]2. An actor crashes on purpose; its supervisor restarts it")
                runtime.tell("client/tallies/alice", CrashOnPurpose())
                runtime.tell("client/tallies/alice", Add(1))  # waits out the restart, not lost
                after = runtime.ask("client/tallies/alice", Read())
                node = runtime.tree().find("client/tallies/alice")
                restarts = node.restarts if node is not None else 0
                checks.check(f"alice was restarted once (restarts={restarts})", restarts == 1)
                checks.check(f"alice reloaded 3 from SQLite and counted on: {after}", after == 4)
                console.print(runtime.tree().render())

                console.print("\n[bold]3. Idle actors passivate and come back from storage")
                passivated = _wait_for(
                    lambda: runtime.directory.view("client/tallies/bob") is None, timeout=5.0
                )
                checks.check("bob passivated after 0.5 s idle", passivated)
                bob = runtime.ask("client/tallies/bob", Add(1))
                checks.check(f"bob reactivated with his count: {bob}", bob == 6)
                console.print(runtime.tree().render())
            console.print("\n[bold]4. Shutdown")
            gone = _wait_for(lambda: set(threading.enumerate()) <= threads_before, timeout=5.0)
            checks.check("no runtime thread is left running", gone)
        finally:
            db.close()
    if checks.failed:
        console.print(f"\n[red bold]demo failed: {len(checks.failed)} check(s) did not hold")
        return 1
    console.print("\n[green bold]demo ok: every check held")
    return 0
