"""`duplex demo`: run a small runtime on the embedded SQLite default and check what it shows.

Part one exercises the kernel: persisted virtual actors on a SQLite file in a temporary
directory, a crash on purpose and its restart from stored state, passivation and
reactivation, the supervision tree. Part two runs a queue server on loopback and two agents
(alice and bob, each on its own SQLite file): the async handshake, messages both ways, a
connection actor crashed in the middle of a command, and the queue server stopped and
started again while a message is on its way. Every claim it prints is checked; the exit
status is 0 only if every check held and no thread was left running.
"""

from __future__ import annotations

import queue
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


def _agents(workdir: Path, console: Console, checks: Checks) -> None:
    from actors.agent import events as ev
    from actors.agent import faults
    from actors.agent.services import AgentConfig, RetryPolicy
    from actors.client import Client
    from protocol.client import ClientConfig
    from protocol.server import QueueServer

    config = AgentConfig(
        retry=RetryPolicy(initial=0.1, slow_after=1.0, maximum=1.0),
        client=ClientConfig(command_timeout=3.0, backoff_initial=0.05, backoff_max=0.5),
    )

    def wait(client: Client, kind: type, **fields: object) -> object | None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                event = client.agent_events.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in fields.items()):
                return event
        return None

    console.rule("[bold]duplex demo: two agents over a queue server")
    server_url = f"sqlite:///{workdir / 'server.db'}"
    server = QueueServer.start(server_url)
    address, port = str(server.address), server.address.port
    console.print(f"queue server: {address}")
    alice = Client.open(f"sqlite:///{workdir / 'alice.db'}", [address], config=config)
    bob = Client.open(f"sqlite:///{workdir / 'bob.db'}", [address], config=config)
    try:
        console.print("\n[bold]4. An async handshake: create, join, allow")
        a_conn = alice.create_connection_async("create-1")
        inv = wait(alice, ev.Inv, corr_id="create-1")
        b_conn = bob.join_connection_async("join-1", inv.link, b"bob") if inv else ""
        conf = wait(alice, ev.Conf, conn_id=a_conn)
        if conf is not None:
            alice.allow_connection_async("allow-1", a_conn, conf.conf_id, b"alice")
        connected = wait(alice, ev.Con, conn_id=a_conn) and wait(bob, ev.Con, conn_id=b_conn)
        checks.check("both sides reached CON", bool(connected))
        alice.send_message(a_conn, b"hello bob")
        message = wait(bob, ev.Msg, conn_id=b_conn)
        checks.check(
            "bob received alice's message, chain intact",
            message is not None and message.body == b"hello bob" and message.integrity == "ok",
        )

        console.print("\n[bold]5. Bob's connection actor crashes in the middle of an ack")
        faults.arm(faults.BEFORE_RUN, "ack")
        if message is not None:
            bob.ack_message_async("ack-1", b_conn, message.msg_id)
        acked = wait(bob, ev.Ok, corr_id="ack-1")
        view = bob.runtime.directory.view(f"client/agent/conns/{b_conn}")
        checks.check(
            f"restarted by its supervisor (restarts={view.restarts if view else 0}) "
            "and the ack completed once",
            acked is not None and bool(view) and view.restarts == 1,
        )
        console.print(bob.tree().render())

        console.print("\n[bold]6. The queue server stops; a message waits; it comes back")
        server.stop()
        bob.send_message(b_conn, b"while the server was down")
        server = QueueServer.start(server_url, port=port)
        checks.check("same address after the restart", str(server.address) == address)
        late = wait(alice, ev.Msg, conn_id=a_conn)
        checks.check(
            "alice got the message sent during the outage",
            late is not None and late.body == b"while the server was down",
        )
    finally:
        faults.disarm_all()
        alice.close()
        bob.close()
        server.stop()


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
            _agents(Path(workdir or tmp), console, checks)
            console.print("\n[bold]7. Shutdown")
            gone = _wait_for(lambda: set(threading.enumerate()) <= threads_before, timeout=5.0)
            checks.check("no runtime thread is left running", gone)
        finally:
            db.close()
    if checks.failed:
        console.print(f"\n[red bold]demo failed: {len(checks.failed)} check(s) did not hold")
        return 1
    console.print("\n[green bold]demo ok: every check held")
    return 0
