"""The stack's physical limits on this machine: websocket echo, SQLite commits, the trio bridge.

What it measures (its row in the README's Performance table). Nothing here is duplex code:
these are the ceilings the layers above are compared with, taken on the machine at hand.

1. **Raw trio-websocket echo between two processes over loopback.** A child process
   (`bench._echo`, started with `subprocess`) serves an echo on two OS-chosen ports, plain
   ``ws`` and ``wss`` with a self-signed EC P-256 certificate generated with `cryptography`
   at start (the queue server runs TLS; the client's ssl context skips verification). Both
   sides use trio-websocket's defaults (message queue of 1, 4 KiB receive buffer) and a
   1 MiB `max_message_size`; messages are 256-byte binary. Two shapes, each on a fresh
   connection whose handshake is outside the clock:

   - *pipelined*: a sender task sends N messages as fast as it can while a receiver task in
     the same nursery takes the N echoes; msg/s from the first send to the last echo.
   - *strict request/reply*: send one, wait for its echo, repeat; round trips/s.

   Each is printed for ``ws`` and ``wss``, with the ratio wss/ws.
2. **SQLite commits through peewee**, on `storage.database.open_database("sqlite:///…")` (WAL)
   and its `transaction()`: single-row insert transactions with ``synchronous=NORMAL`` and
   with ``FULL`` (each transaction checks a pooled connection out and back in, as the actors
   do), and rows/s of `insert_many` in chunks of `INSERT_CHUNK` rows inside one transaction
   (on the NORMAL database). A row is an integer and a 64-byte blob.
3. **The trio bridge** the runtime's I/O is built on: `trio.from_thread.run_sync` round
   trips/s from a worker thread, and `TrioToken.run_sync_soon` calls/s fire-and-forget,
   timed from the worker's first call until the trio side has run the last callback.

Every figure is the **best of `repeats` runs** (noise from other tenants only ever slows a run
down, so the best is the closest to what the stack can do); the median is printed next to it
as `*_median`. ws and wss are interleaved (ws, wss, ws, wss, ...) so a burst of load from
another tenant hits both, and likewise NORMAL, FULL and batched.

The child is stopped on every exit path: the bench closes its stdin (the child's signal to
stop), waits, and kills it if it has not gone; if the bench itself dies, the kernel closes the
pipe and the child stops on its own.

Run: ``python -m bench.limits [--quick] [--json]``. ``--quick`` shrinks every N so the whole
script takes a few seconds; ``--json`` prints one JSON object instead of ``name value unit``
lines. Progress bars go to stderr.
"""

from __future__ import annotations

import datetime
import os
import select
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import peewee
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rich.progress import Progress
from trio_websocket import WebSocketConnection, open_websocket_url

from bench._echo import HOST, MAX_MESSAGE_SIZE
from bench._report import Report, best, machine, median, note, parse_args, progress, rate, stopwatch
from storage.database import Database, Migration, bind_models, open_database

WAIT_TIMEOUT = 120.0  # a measurement that takes this long is broken, not slow
CHILD_START_TIMEOUT = 30.0
CHILD_STOP_TIMEOUT = 5.0
MESSAGE_BYTES = 256
INSERT_CHUNK = 1_000  # rows per insert_many statement (2,000 variables, within SQLite's limit)
ROW_BLOB = bytes(range(64))


@dataclass(frozen=True, slots=True)
class Sizes:
    pipelined: int  # messages per pipelined echo run
    strict: int  # round trips per strict echo run
    commits_normal: int  # single-row transactions, synchronous=NORMAL
    commits_full: int  # single-row transactions, synchronous=FULL
    batched: int  # rows in the one batched transaction
    from_thread: int  # trio.from_thread.run_sync round trips
    run_sync_soon: int  # TrioToken.run_sync_soon calls
    repeats: int


FULL = Sizes(8_000, 2_000, 4_000, 1_000, 50_000, 8_000, 100_000, 3)
QUICK = Sizes(2_000, 400, 800, 200, 10_000, 1_000, 20_000, 2)


# ---------------------------------------------------------------------------- the echo child


@dataclass(frozen=True, slots=True)
class Certificate:
    certfile: Path
    keyfile: Path


def self_signed_certificate(directory: Path) -> Certificate:
    """A throwaway EC P-256 certificate for 127.0.0.1, written as PEM files into `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "duplex bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(certfile, keyfile)


def client_ssl_context() -> ssl.SSLContext:
    """TLS as a real client negotiates it, minus verification (the certificate is throwaway)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class EchoPorts:
    ws: int
    wss: int


@contextmanager
def echo_server(cert: Certificate) -> Iterator[EchoPorts]:
    """Run `bench._echo` in a child process; stop it (or kill it) however the block ends."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench._echo", str(cert.certfile), str(cert.keyfile)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], CHILD_START_TIMEOUT)
        line = child.stdout.readline() if ready else b""
        try:
            ws, wss = (int(port) for port in line.split())
        except ValueError:
            raise RuntimeError(
                f"the echo server did not report its ports (exit code {child.poll()})"
            ) from None
        yield EchoPorts(ws, wss)
    finally:
        _stop(child)


def _stop(child: subprocess.Popen[bytes]) -> None:
    try:
        if child.stdin is not None:
            child.stdin.close()  # end of file: the child's signal to stop
        child.wait(CHILD_STOP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        pass
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


# ---------------------------------------------------------------------------- 1: echo


async def _warm_up(ws: WebSocketConnection, payload: bytes) -> None:
    for _ in range(10):
        await ws.send_message(payload)
        await ws.get_message()


async def pipelined(url: str, context: ssl.SSLContext | None, n: int) -> float:
    payload = os.urandom(MESSAGE_BYTES)
    async with open_websocket_url(url, context, max_message_size=MAX_MESSAGE_SIZE) as ws:
        await _warm_up(ws, payload)
        with trio.fail_after(WAIT_TIMEOUT):
            elapsed = stopwatch()

            async def sender() -> None:
                send = ws.send_message
                for _ in range(n):
                    await send(payload)

            last = b""
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                receive = ws.get_message
                for _ in range(n):
                    last = await receive()
            seconds = elapsed()
    if last != payload:
        raise RuntimeError("the echo server sent back something else")
    return rate(n, seconds)


async def strict(url: str, context: ssl.SSLContext | None, n: int) -> float:
    payload = os.urandom(MESSAGE_BYTES)
    async with open_websocket_url(url, context, max_message_size=MAX_MESSAGE_SIZE) as ws:
        await _warm_up(ws, payload)
        send, receive = ws.send_message, ws.get_message
        with trio.fail_after(WAIT_TIMEOUT):
            elapsed = stopwatch()
            for _ in range(n):
                await send(payload)
                if await receive() != payload:
                    raise RuntimeError("the echo server sent back something else")
            return rate(n, elapsed())


def bench_echo(report: Report, sizes: Sizes, bars: Progress) -> None:
    shapes = (
        ("pipelined", pipelined, sizes.pipelined, "msg/s"),
        ("strict", strict, sizes.strict, "round-trips/s"),
    )
    with tempfile.TemporaryDirectory(prefix="duplex-bench-") as tmp:
        cert = self_signed_certificate(Path(tmp))
        with echo_server(cert) as ports:
            urls = {
                "ws": (f"ws://{HOST}:{ports.ws}/", None),
                "wss": (f"wss://{HOST}:{ports.wss}/", client_ssl_context()),
            }
            rates: dict[tuple[str, str], list[float]] = {
                (scheme, shape[0]): [] for scheme in urls for shape in shapes
            }
            task = bars.add_task("websocket echo (ws, wss)", total=sizes.repeats * len(rates))

            async def run_all() -> None:
                for _ in range(sizes.repeats):
                    for name, measure, n, _unit in shapes:
                        for scheme, (url, context) in urls.items():
                            rates[scheme, name].append(await measure(url, context, n))
                            bars.advance(task)

            trio.run(run_all)
            bars.remove_task(task)

    report.add("message_bytes", MESSAGE_BYTES, "B")
    for name, _measure, n, unit in shapes:
        report.add(f"{name}_messages", n)
        for scheme in urls:
            key = f"{scheme}_{name}_per_s"
            report.add(key, best(rates[scheme, name]), unit)
            report.add(f"{key}_median", median(rates[scheme, name]), unit)
        report.add(f"ratio_wss_to_ws_{name}", best(rates["wss", name]) / best(rates["ws", name]))


# ---------------------------------------------------------------------------- 2: SQLite


class BenchRow(peewee.Model):
    seq = peewee.IntegerField()
    body = peewee.BlobField()

    class Meta:
        table_name = "bench_limits_row"


def _create_rows_table(db: peewee.Database) -> None:
    db.create_tables(list(bind_models(db, BenchRow)))


ROWS_MIGRATIONS = (Migration(1, "bench limits rows", _create_rows_table),)


def single_row_commits(db: Database, n: int) -> float:
    model = db.bind(BenchRow).BenchRow
    transaction = db.transaction
    elapsed = stopwatch()
    for i in range(n):
        with transaction():
            model.insert(seq=i, body=ROW_BLOB).execute()
    return rate(n, elapsed())


def batched_rows(db: Database, n: int) -> float:
    model = db.bind(BenchRow).BenchRow
    rows = [(i, ROW_BLOB) for i in range(n)]
    fields = [model.seq, model.body]
    elapsed = stopwatch()
    with db.transaction():
        for chunk in peewee.chunked(rows, INSERT_CHUNK):
            model.insert_many(chunk, fields=fields).execute()
    return rate(n, elapsed())


def bench_sqlite(report: Report, sizes: Sizes, bars: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="duplex-bench-") as tmp:
        normal = open_database(
            f"sqlite:///{Path(tmp) / 'normal.db'}", synchronous="NORMAL", migrations=ROWS_MIGRATIONS
        )
        try:
            full = open_database(
                f"sqlite:///{Path(tmp) / 'full.db'}", synchronous="FULL", migrations=ROWS_MIGRATIONS
            )
            try:
                measurements: list[tuple[str, str, Callable[[], float]]] = [
                    ("normal", "tx/s", lambda: single_row_commits(normal, sizes.commits_normal)),
                    ("full", "tx/s", lambda: single_row_commits(full, sizes.commits_full)),
                    ("batched", "rows/s", lambda: batched_rows(normal, sizes.batched)),
                ]
                rates: dict[str, list[float]] = {name: [] for name, _, _ in measurements}
                task = bars.add_task(
                    "SQLite commits (NORMAL, FULL, batched)",
                    total=sizes.repeats * len(measurements),
                )
                for _ in range(sizes.repeats):
                    for name, _unit, measure in measurements:
                        rates[name].append(measure())
                        bars.advance(task)
                bars.remove_task(task)
            finally:
                full.close()
        finally:
            normal.close()

    names = {
        "normal": "sqlite_normal_commits_per_s",
        "full": "sqlite_full_commits_per_s",
        "batched": "sqlite_batched_rows_per_s",
    }
    for name, unit, _measure in measurements:
        report.add(names[name], best(rates[name]), unit)
        report.add(f"{names[name]}_median", median(rates[name]), unit)
    report.add("sqlite_batched_rows", sizes.batched, "rows")


# ---------------------------------------------------------------------------- 3: trio bridge


def _nothing() -> None:
    return None


async def from_thread_round_trips(n: int) -> float:
    def worker() -> float:
        run_sync = trio.from_thread.run_sync
        elapsed = stopwatch()
        for _ in range(n):
            run_sync(_nothing)
        return rate(n, elapsed())

    with trio.fail_after(WAIT_TIMEOUT):
        return await trio.to_thread.run_sync(worker)


async def run_sync_soon_calls(n: int) -> float:
    """Fire-and-forget from a worker; the clock stops when trio has run the n-th callback."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    count = 0
    finished = 0.0

    def tick() -> None:
        nonlocal count, finished
        count += 1
        if count == n:
            finished = time.perf_counter()
            done.set()

    def worker() -> float:
        soon = token.run_sync_soon
        started = time.perf_counter()
        for _ in range(n):
            soon(tick)
        return started

    with trio.fail_after(WAIT_TIMEOUT):
        started = await trio.to_thread.run_sync(worker)
        await done.wait()
    return rate(n, finished - started)


def bench_bridge(report: Report, sizes: Sizes, bars: Progress) -> None:
    from_thread: list[float] = []
    soon: list[float] = []
    task = bars.add_task("trio bridge (from_thread, run_sync_soon)", total=2 * sizes.repeats)

    async def run_all() -> None:
        for _ in range(sizes.repeats):
            from_thread.append(await from_thread_round_trips(sizes.from_thread))
            bars.advance(task)
            soon.append(await run_sync_soon_calls(sizes.run_sync_soon))
            bars.advance(task)

    trio.run(run_all)
    bars.remove_task(task)
    report.add("trio_from_thread_run_sync_per_s", best(from_thread), "round-trips/s")
    report.add("trio_from_thread_run_sync_per_s_median", median(from_thread), "round-trips/s")
    report.add("trio_run_sync_soon_per_s", best(soon), "calls/s")
    report.add("trio_run_sync_soon_per_s_median", median(soon), "calls/s")


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args("limits", __doc__, argv)
    sizes = QUICK if args.quick else FULL
    report = Report("limits")
    note(f"bench.limits on {machine()}", not args.json)
    total = stopwatch()
    with progress(enabled=not args.json) as bars:
        bench_echo(report, sizes, bars)
        bench_sqlite(report, sizes, bars)
        bench_bridge(report, sizes, bars)
    report.add("repeats", sizes.repeats)
    report.add("total_seconds", total(), "s")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
