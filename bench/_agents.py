"""Shared helpers of the agent benches (`bench.messaging`, `bench.connect`, `bench.recovery`).

- `ServerProcess`: the queue server as in production, ``python -m actors.cli server`` on a
  SQLite file, in its own process. It is started through this module
  (``python -m bench._agents server PARENT_PID CLI_ARGS…``), which first arranges to be
  SIGTERMed when the bench process dies (`die_with_parent`: ``PR_SET_PDEATHSIG`` set by the
  child itself, so no ``preexec_fn`` runs between fork and exec in a process that has
  threads, plus a thread watching the parent pid) and then runs the CLI. `stop()` sends
  SIGTERM, waits, kills if it lingers. It can be started again on the same file and port:
  the server keeps its certificate in its store, so the address that the clients stored
  (fingerprint, host, port) is valid again.
- `JsonChild`: any other bench child (JSON lines on stdin/stdout), e.g. the client process
  that `bench.recovery` kills with SIGKILL.
- `BENCH_CONFIG`: the agent configuration of the benches: the defaults (retry and reconnect
  delays, quota retry, TTLs), except generous timeouts for a command, a connect and a sync
  call (a loaded machine must make a run slow, not wrong).
- `open_client`, `EventPump` (a thread that takes one client's events and hands each to a
  handler, with the `perf_counter()` time it was taken), `Handshake` (M invitation
  handshakes at once, all async, driven by the events: create → INV → join → CONF → allow
  → CON on both sides), `server_queue_count` (the queues in a server's SQLite file).

Every completion event (INV, JOINED, OK) is acknowledged with `ack_command_event` once it was
handled, as a chat must: otherwise the command rows would pile up in the agent's database.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.agent import events as ev
from actors.agent.services import AgentConfig, RetryPolicy
from actors.client import Client
from protocol.address import ServerAddress
from protocol.client import ClientConfig

HOST = "127.0.0.1"
QUOTA = 128  # the server's default, passed explicitly so that it is visible
SERVER_START_TIMEOUT = 30.0
CHILD_STOP_TIMEOUT = 10.0  # the server's stop() joins its thread for up to 10 s

BENCH_CONFIG = AgentConfig(
    retry=RetryPolicy(),  # the defaults: 2 s, x1.5 after 10 s, at most 120 s
    sync_timeout=60.0,
    client=ClientConfig(command_timeout=30.0, connect_timeout=10.0),
)


# ---------------------------------------------------------------------------- child processes


def die_with_parent(parent: int) -> None:
    """In a child: SIGTERM when the bench process (`parent`) dies; exit if it already did.

    ``PR_SET_PDEATHSIG`` does it on Linux; a daemon thread that checks the parent pid twice
    a second does it everywhere else, and is a second line should the signal ever be lost.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()


class LineReader:
    """Lines of a child's unbuffered stdout, each waited for at most `timeout` seconds."""

    def __init__(self, child: subprocess.Popen[bytes], what: str) -> None:
        assert child.stdout is not None
        self.child, self.what = child, what
        self._fd = child.stdout.fileno()
        self._buffer = bytearray()

    def line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self.what} did not answer within {timeout:.0f} s")
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if ready:
                chunk = os.read(self._fd, 1 << 16)
                if not chunk:
                    code = self.child.poll()
                    raise RuntimeError(f"{self.what} exited (code {code}); its stderr is above")
                self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line


def stop_child(child: subprocess.Popen[bytes], *, terminate: bool = True) -> None:
    """Close its stdin, SIGTERM it (if asked), wait; SIGKILL it if it lingers. Idempotent."""
    try:
        if child.stdin is not None and not child.stdin.closed:
            with suppress(OSError):
                child.stdin.close()
        if terminate and child.poll() is None:
            child.terminate()
        child.wait(CHILD_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None and not child.stdout.closed:
            child.stdout.close()


class ServerProcess:
    """``actors.cli server`` on `db` (a path) in its own process; see the module docstring."""

    def __init__(
        self, db: Path, *, port: int = 0, quota: int = QUOTA, options: tuple[str, ...] = ()
    ) -> None:
        self.db = db
        self.port = port
        self.quota = quota
        self.options = options  # more `duplex server` flags (e.g. a limit a bench raises)
        self.address = ""
        self._child: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start it (on the port of the previous start, if any); returns its address."""
        if self._child is not None:
            raise RuntimeError("the queue server is running already")
        self._child = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench._agents", "server", str(os.getpid())),
                *("--db", f"sqlite:///{self.db}", "--host", HOST),
                *("--port", str(self.port), "--quota", str(self.quota)),
                *self.options,
            ],
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        try:
            line = LineReader(self._child, "the queue server").line(SERVER_START_TIMEOUT)
            address = ServerAddress.parse(line.decode("ascii", "replace"))
        except BaseException:
            self.stop()
            raise
        self.address, self.port = str(address), address.port
        return self.address

    @property
    def pid(self) -> int:
        assert self._child is not None
        return self._child.pid

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            stop_child(child)

    def __enter__(self) -> ServerProcess:
        if self._child is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class JsonChild:
    """A bench child process speaking JSON lines on stdin/stdout (stderr is inherited).

    ``python -m MODULE ARGS…`` with this process's pid appended to the environment as
    ``BENCH_PARENT`` (the child calls `die_with_parent` with it). `stop()` closes its stdin,
    then SIGTERMs and finally SIGKILLs it; `kill()` is the kill -9 of a recovery test.
    """

    def __init__(self, module: str, *args: str, what: str = "the child") -> None:
        self.what = what
        self.child = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env={**os.environ, "BENCH_PARENT": str(os.getpid())},
        )
        self.pid = self.child.pid
        self._lines = LineReader(self.child, what)

    def send(self, **command: Any) -> None:
        assert self.child.stdin is not None
        try:
            self.child.stdin.write((json.dumps(command) + "\n").encode())
        except BrokenPipeError:
            raise RuntimeError(f"{self.what} exited (code {self.child.poll()})") from None

    def receive(self, timeout: float) -> dict[str, Any]:
        return json.loads(self._lines.line(timeout))

    def kill(self) -> int:
        """SIGKILL it now; returns its exit code (-9 unless it had died already)."""
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        code = self.child.wait()
        stop_child(self.child)
        return code

    def stop(self) -> None:
        stop_child(self.child)

    def __enter__(self) -> JsonChild:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def parent_pid() -> int:
    """In a `JsonChild`: the bench process's pid."""
    return int(os.environ["BENCH_PARENT"])


def server_queue_count(db: Path) -> int:
    """The queues a server's SQLite file holds (read-only; the server may be running)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30.0) as connection:
        return connection.execute("SELECT count(*) FROM server_queue").fetchone()[0]


# ---------------------------------------------------------------------------- clients


def open_client(directory: Path, name: str, servers: list[str]) -> Client:
    return Client.open(f"sqlite:///{directory / name}.db", servers, config=BENCH_CONFIG)


Handler = Callable[[Any, float], None]


class EventPump:
    """A thread that takes `client`'s events and calls `handler(event, perf_counter())`.

    A handler that raises stops the pump; `check()` (and `stop()`) re-raise its error in the
    bench's thread. `handler` may be swapped between phases.
    """

    def __init__(self, client: Client, name: str, handler: Handler | None = None) -> None:
        self.client = client
        self.handler: Handler = handler or (lambda event, at: None)
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bench-{name}-events")
        self._thread.start()

    def _run(self) -> None:
        events = self.client.agent_events
        while not self._stopping.is_set():
            try:
                event = events.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                self.handler(event, time.perf_counter())
            except BaseException as exc:  # noqa: BLE001 (re-raised in the bench's thread)
                self.error = exc
                return

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"an event handler failed: {self.error!r}") from self.error

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10.0)
        self.check()


def wait_until(
    done: Callable[[], bool], timeout: float, what: str, pumps: tuple[EventPump, ...] = ()
) -> None:
    """Poll `done` every 5 ms until it holds; fail after `timeout` s or on a pump error."""
    deadline = time.monotonic() + timeout
    while not done():
        for pump in pumps:
            pump.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.005)


# ---------------------------------------------------------------------------- handshakes


@dataclass(slots=True)
class Handshake:
    """M invitation handshakes between alice and bob at once, driven by their events.

    `start()` issues every `create_connection_async`; alice's pump joins bob to each INV
    (`join_connection_async`) and allows each CONF (`allow_connection_async`); `done` once
    both sides saw CON for all M. The pumps' handlers must forward to `on_alice`/`on_bob`.
    """

    alice: Client
    bob: Client
    count: int
    tag: str
    started_at: float = 0.0
    finished_at: float = 0.0
    pairs: dict[int, list[str]] = field(default_factory=dict)  # index -> [alice, bob conn]
    index_of: dict[str, int] = field(default_factory=dict)  # alice's conn id -> index
    alice_con: set[str] = field(default_factory=set)
    bob_con: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.started_at = time.perf_counter()
        for i in range(self.count):
            a_conn = self.alice.create_connection_async(f"{self.tag}-create-{i}")
            with self.lock:
                self.index_of[a_conn] = i
                self.pairs.setdefault(i, ["", ""])[0] = a_conn

    @property
    def done(self) -> bool:
        return len(self.alice_con) == self.count and len(self.bob_con) == self.count

    def on_alice(self, event: Any, at: float) -> None:
        match event:
            case ev.Inv(corr_id=corr_id, link=link) if corr_id and corr_id.startswith(
                f"{self.tag}-create-"
            ):
                i = int(corr_id.rsplit("-", 1)[1])
                with self.lock:
                    self.index_of[event.conn_id] = i
                b_conn = self.bob.join_connection_async(f"{self.tag}-join-{i}", link, b"bob")
                with self.lock:
                    self.pairs.setdefault(i, ["", ""])[1] = b_conn
                self.alice.ack_command_event(corr_id)
            case ev.Conf(conn_id=conn_id, conf_id=conf_id):
                i = self._index(conn_id)
                self.alice.allow_connection_async(
                    f"{self.tag}-allow-{i}", conn_id, conf_id, b"alice"
                )
            case ev.Ok(corr_id=corr_id) if corr_id and corr_id.startswith(f"{self.tag}-allow-"):
                self.alice.ack_command_event(corr_id)
            case ev.Con(conn_id=conn_id):
                self.alice_con.add(conn_id)
                self._finished(at)
            case ev.Err():
                raise RuntimeError(f"alice: {event}")

    def on_bob(self, event: Any, at: float) -> None:
        match event:
            case ev.Joined(corr_id=corr_id) if corr_id:
                self.bob.ack_command_event(corr_id)
            case ev.Con(conn_id=conn_id):
                self.bob_con.add(conn_id)
                self._finished(at)
            case ev.Err():
                raise RuntimeError(f"bob: {event}")

    def _index(self, a_conn: str) -> int:
        # The CONF follows the INV, which this same pump thread handled before.
        with self.lock:
            return self.index_of[a_conn]

    def _finished(self, at: float) -> None:
        if self.done and not self.finished_at:
            self.finished_at = at

    def seconds(self) -> float:
        return self.finished_at - self.started_at

    def connections(self) -> list[tuple[str, str]]:
        """(alice's conn id, bob's conn id) of every pair, in index order."""
        return [(a, b) for a, b in (self.pairs[i] for i in range(self.count))]


def connect_all(
    alice: Client, bob: Client, count: int, tag: str, timeout: float = 120.0
) -> Handshake:
    """Run `count` handshakes at once with temporary pumps; returns the finished Handshake."""
    handshake = Handshake(alice, bob, count, tag)
    pumps = (EventPump(alice, "alice", handshake.on_alice), EventPump(bob, "bob", handshake.on_bob))
    try:
        handshake.start()
        wait_until(lambda: handshake.done, timeout, f"{count} handshakes", pumps)
    finally:
        for pump in pumps:
            pump.stop()
    return handshake


# ---------------------------------------------------------------------------- child entry


def _server_main(argv: list[str]) -> int:
    die_with_parent(int(argv[0]))
    from actors.cli import main as cli_main

    return cli_main(["server", *argv[1:]])


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "server":
        sys.exit(_server_main(sys.argv[2:]))
    print("usage: python -m bench._agents server PARENT_PID [server options]", file=sys.stderr)
    sys.exit(2)
