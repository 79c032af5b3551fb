"""The `duplex` command line: `duplex demo` and `duplex bench NAME`.

The CLI is the only place that prints to the terminal; everything it runs reports through
return values and logging.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

BENCHMARKS = ("actors",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duplex", description="An actor-model runtime for server-relayed messaging."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run a small runtime on SQLite and check it")
    demo.add_argument("--workdir", type=Path, help="keep the demo's files here")

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
    if args.command == "demo":
        from actors.demo import run_demo

        return run_demo(args.workdir)
    module = importlib.import_module(f"bench.{args.name}")
    return int(module.main(args.args) or 0)


if __name__ == "__main__":
    sys.exit(main())
