"""The `duplex` command line: `duplex server`, `demo`, `bench NAME`, `tree` and `console`.

The CLI is the only place that prints to the terminal; everything it runs reports through
return values and logging. It owns what a user sees when something is wrong: a bad option,
a port in use or a database that does not open is one line on stderr (never a traceback),
and Ctrl-C ends a command with exit status 130 and one line. `-v` logs at INFO level with
each record's structured fields (`extra=`) appended.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:  # imported where used: `duplex --help` stays quick
    from actors.debug import DebugEndpoint
    from protocol.server import QueueServer

BENCHMARKS = (
    "limits",
    "actors",
    "server",
    "server_abuse",
    "messaging",
    "connect",
    "recovery",
    "group_join",
)


# Hosts that mean "every interface": a server listens there, but no peer can dial them.
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
INTERRUPTED = 130  # the shell's status for a command ended by SIGINT


class _Parser(argparse.ArgumentParser):
    """An argument parser whose refusal is one line: what is wrong and where help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, except where there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number, not {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1..65535 (or 0: any free port), not {port}")
    return port


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a whole number ≥ 1 (counts, bytes) or a number of seconds > 0."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number of seconds"
            raise argparse.ArgumentTypeError(f"{what} is needed, not {text!r}") from None
        if not value > 0 or value == float("inf"):  # `not >` refuses nan too
            least = "at least 1" if kind is int else "more than 0 (and finite)"
            raise argparse.ArgumentTypeError(f"{least} is needed, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="duplex", description="An actor-model runtime for server-relayed messaging."
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at INFO level, with each record's fields"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser(
        "server",
        help="run a queue server and print its address",
        description="Run a queue server until Ctrl-C; the first line printed is its address "
        "(duplex://<certificate fingerprint>@host:port), which clients are given.",
        formatter_class=_DefaultsShown,
    )
    server.add_argument(
        "--db",
        default="sqlite:///duplex-server.db",
        help="database URL: sqlite:///relative.db, sqlite:////absolute.db or "
        "postgresql://user:password@host:port/name",
    )
    server.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (0.0.0.0 or :: for every interface; give --public-host then)",
    )
    server.add_argument(
        "--port", type=_port, default=5223, help="TCP port to listen on (0: any free port)"
    )
    server.add_argument(
        "--public-host",
        help="the host name or IP address peers dial, put in the printed address (default: --host)",
    )
    server.add_argument(
        "--passphrase-file",
        type=Path,
        help="encrypt the SQLite store (and the server's TLS key in it) with the passphrase "
        "on this file's first line (SQLCipher)",
    )
    server.add_argument(
        "--debug",
        action="store_true",
        help="also serve a debug endpoint on 127.0.0.1 for `duplex tree` and `duplex console` "
        "(its URL and token file are printed): the live client sessions, and a drop command",
    )
    _server_limits(server)

    demo = commands.add_parser(
        "demo",
        help="play a small network on loopback and check every claim",
        description="Two queue servers, an owner and five members on SQLite files: contacts, a "
        "peer-to-peer group, a server restart, crashes, a client reopened, a queue moved to "
        "the other server. Exits 0 only if every printed claim held.",
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        help="keep the servers' and clients' files here (made if missing); a second run on "
        "the same directory reopens them",
    )
    demo.add_argument(
        "--members",
        type=int,
        choices=range(1, 6),
        default=5,
        metavar="1-5",
        help="members in the cast: fewer play the same acts sooner",
    )
    demo.add_argument(
        "--console",
        action="store_true",
        help="at the end keep running with the debug endpoint on, printing the "
        "`duplex console` command to attach, until Ctrl-C",
    )

    for name, text in (
        ("tree", "print the supervision tree of a runtime served with debug=True"),
        ("console", "watch and drive a runtime served with debug=True (textual)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("endpoint", help="the URL the debug endpoint printed (ws://…)")
        sub.add_argument("--token-file", type=Path, help="read the token from this file")
        if name == "tree":
            sub.add_argument("--json", action="store_true", help="print the snapshot as JSON")

    bench = commands.add_parser("bench", help="run a benchmark from bench/")
    bench.add_argument("name", choices=BENCHMARKS)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _set_up_logging(args.verbose)
    if args.command == "server":
        return _run_server(args)
    if args.command in ("tree", "console"):
        from actors import console

        return console.tree_main(args) if args.command == "tree" else console.console_main(args)
    if args.command == "demo":
        from actors.demo import run_demo

        return run_demo(args.workdir, members=args.members, keep_running=args.console)
    return _run_bench(args.name, args.args)


# Set in the process that runs a bench for `duplex bench` (see `_run_bench`).
_BENCH_CHILD = "DUPLEX_BENCH_CHILD"


def _run_bench(name: str, argv: list[str]) -> int:
    """Run bench `name` in a child process of its own process group, and on Ctrl-C pass the
    interrupt on to that process alone.

    A terminal's Ctrl-C signals its whole foreground process group. A bench's helper
    processes (queue servers, workers) would each get it too, mid-import at times, and print
    their own tracebacks; in a group of their own they never see it, and the bench stops
    them on its way out as on any other exit. The user reads one line and gets status 130.
    """
    if os.environ.get(_BENCH_CHILD):
        try:
            module = importlib.import_module(f"bench.{name}")
            return int(module.main(argv) or 0)
        except KeyboardInterrupt:
            return INTERRUPTED
        except BaseExceptionGroup as group:
            # an interrupt that lands inside a trio nursery comes out wrapped in a group
            if group.split(KeyboardInterrupt)[1] is None:
                return INTERRUPTED
            raise
    command = [sys.executable, "-m", "actors.cli", "bench", name, *argv]
    bench = subprocess.Popen(command, env={**os.environ, _BENCH_CHILD: "1"}, process_group=0)
    try:
        code = bench.wait()
    except KeyboardInterrupt:
        bench.send_signal(signal.SIGINT)
        try:
            bench.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: stop everything of the bench now
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
        code = INTERRUPTED
    if code in (INTERRUPTED, -signal.SIGINT):
        print(f"duplex bench {name}: interrupted", file=sys.stderr)
        return INTERRUPTED
    return code if code >= 0 else 128 - code


# The attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class FieldsFormatter(logging.Formatter):
    """The usual line, then the record's structured fields (``extra={...}``) as key=value:
    the runtime logs "dead letter" with the address, the message type and the reason, and
    without them the line says little."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        pairs = " ".join(f"{key}={value!r}" for key, value in fields.items())
        return f"{head} [{pairs}]{newline}{rest}"


def _set_up_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(FieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL, handlers=[handler])


# `duplex server`'s limits: (flag, ServerConfig field, type, help). The defaults are the
# server's own (protocol/server/limits.py), shown by --help.
_SERVER_LIMITS = (
    ("--quota", "quota", int, "messages a queue may hold"),
    ("--quota-bytes", "quota_bytes", int, "bytes of message bodies a queue may hold"),
    ("--store-bytes", "store_bytes", int, "bytes of message bodies the store may hold"),
    ("--message-ttl", "message_ttl", float, "seconds a message is kept"),
    ("--new-queues", "new_queues", int, "queues one session may create per window"),
    ("--new-queue-window", "new_queue_window", float, "seconds of that window"),
    ("--auth-failures", "auth_failures", int, "AUTH refusals per window that close a session"),
    ("--auth-failure-window", "auth_failure_window", float, "seconds of that window"),
)


def _server_limits(server: argparse.ArgumentParser) -> None:
    from protocol.server.limits import Limits

    defaults = Limits()
    for flag, field, kind, text in _SERVER_LIMITS:
        server.add_argument(flag, type=_positive(kind), default=getattr(defaults, field), help=text)


def _server_config(args: argparse.Namespace, config: type) -> object:
    return config(**{field: getattr(args, field) for _, field, _, _ in _SERVER_LIMITS})


def _run_server(args: argparse.Namespace) -> int:
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in _STOP_SIGNALS}
    try:
        return _serve_until_stopped(args, stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _serve_until_stopped(args: argparse.Namespace, stop: threading.Event) -> int:
    from protocol.address import ServerAddress
    from protocol.errors import DuplexError
    from protocol.server import QueueServer, ServerConfig

    new_files = _new_sqlite_files(args.db)
    try:
        passphrase = None
        if args.passphrase_file is not None:
            passphrase = _read_passphrase(args.passphrase_file)
        _check_can_listen(args.host, args.port)  # before the database file is made
        server = QueueServer.start(
            args.db,
            host=args.host,
            port=args.port,
            config=_server_config(args, ServerConfig),
            passphrase=passphrase,
        )
    except DuplexError as exc:
        for path in new_files:  # a server that did not start leaves no database behind
            path.unlink(missing_ok=True)
        print(f"duplex server: {exc}", file=sys.stderr)
        return 1
    address = server.address
    if args.public_host:
        address = ServerAddress(address.fingerprint, args.public_host, address.port)
    # The address alone on the first line: scripts and bench/_agents.py read it.
    print(address, flush=True)
    print(f"  listening on {_host_port(args.host, address.port)}", flush=True)
    if not args.public_host and args.host in _WILDCARD_HOSTS:
        print(
            f"  {args.host or 'every interface'} is no address a peer can dial: run with "
            "--public-host NAME (the host name or IP peers use) to print one they can",
            flush=True,
        )
    print(f"  database: {_database_place(args.db, server.database.target)}", flush=True)
    print("  Ctrl-C stops it", flush=True)
    endpoint: DebugEndpoint | None = None
    if args.debug:
        endpoint = _start_debug_endpoint(server)
        if endpoint is None:
            server.stop()
            return 1
    stop.wait()
    if endpoint is not None:
        endpoint.stop()  # before the server: its snapshots read the server
    server.stop()
    return 0


def _start_debug_endpoint(server: QueueServer) -> DebugEndpoint | None:
    """`duplex server --debug`: the endpoint, its URL and token file printed one line each;
    None (and one line on stderr) if it did not start."""
    from actors.debug import DebugEndpoint
    from actors.debug.server_target import QueueServerTarget
    from actors.kernel import ActorUnavailable

    try:
        endpoint = DebugEndpoint.start(QueueServerTarget(server))
    except ActorUnavailable as exc:
        print(f"duplex server: {exc}", file=sys.stderr)
        return None
    print(f"  debug endpoint: {endpoint.url}", flush=True)
    print(f"  debug token file: {endpoint.token_file}", flush=True)
    return endpoint


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_can_listen(host: str, port: int) -> None:
    """Bind every address `host` resolves to, as the server will, and let go at once: a port
    in use or a host that is not ours is refused in one line before any file is made. (The
    server binds with SO_REUSEADDR too, so a port in TIME_WAIT passes here and there.)"""
    from protocol.errors import ConfigurationError

    where = _host_port(host, port)
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on {where}: {exc.strerror}") from None
    for family, kind, protocol, _, sockaddr in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigurationError(
                        f"cannot listen on {where}: the port is in use (another server? "
                        "--port chooses another)"
                    ) from None
                raise ConfigurationError(f"cannot listen on {where}: {exc.strerror}") from None


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url.removeprefix(prefix)) if url.startswith(prefix) else None


def _new_sqlite_files(url: str) -> list[Path]:
    """The files a SQLite database at `url` would create that do not exist yet: removed again
    if the server does not start."""
    path = _sqlite_file(url)
    if path is None or path.exists():
        return []
    return [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")]


def _database_place(url: str, target: str) -> str:
    """Where the database is: a SQLite file's absolute path, else the (redacted) URL."""
    return os.path.abspath(target) if _sqlite_file(url) is not None else target


def _read_passphrase(path: Path) -> str:
    from protocol.errors import ConfigurationError

    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the passphrase file {path}: {exc}") from exc
    if not lines or not lines[0]:
        raise ConfigurationError(f"the passphrase file {path} is empty")
    return lines[0]


if __name__ == "__main__":
    sys.exit(main())
