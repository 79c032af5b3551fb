"""The `duplex` command line: `duplex server`, `duplex demo` and `duplex bench NAME`.

The CLI is the only place that prints to the terminal; everything it runs reports through
return values and logging.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duplex", description="An actor-model runtime for server-relayed messaging."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser("server", help="run a queue server and print its address")
    server.add_argument("--db", default="sqlite:///duplex-server.db", help="database URL")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=5223)
    server.add_argument(
        "--passphrase-file",
        type=Path,
        help="encrypt the SQLite store (and the server's TLS key in it) with the passphrase "
        "on this file's first line (SQLCipher)",
    )
    _server_limits(server)

    demo = commands.add_parser("demo", help="run a small runtime on SQLite and check it")
    demo.add_argument("--workdir", type=Path, help="keep the demo's files here")

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
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "server":
        return _run_server(args)
    if args.command in ("tree", "console"):
        from actors import console

        return console.tree_main(args) if args.command == "tree" else console.console_main(args)
    if args.command == "demo":
        from actors.demo import run_demo

        return run_demo(args.workdir)
    module = importlib.import_module(f"bench.{args.name}")
    return int(module.main(args.args) or 0)


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
        default = getattr(defaults, field)
        server.add_argument(flag, type=kind, default=default, help=f"{text} ({default})")


def _server_config(args: argparse.Namespace, config: type) -> object:
    return config(**{field: getattr(args, field) for _, field, _, _ in _SERVER_LIMITS})


def _run_server(args: argparse.Namespace) -> int:
    from protocol.errors import DuplexError
    from protocol.server import QueueServer, ServerConfig

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        passphrase = None
        if args.passphrase_file is not None:
            passphrase = _read_passphrase(args.passphrase_file)
        server = QueueServer.start(
            args.db,
            host=args.host,
            port=args.port,
            config=_server_config(args, ServerConfig),
            passphrase=passphrase,
        )
    except DuplexError as exc:
        print(f"duplex server: {exc}", file=sys.stderr)
        return 1
    print(server.address, flush=True)
    stop.wait()
    server.stop()
    return 0


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
