"""Shared output helpers for the bench scripts (quality.md: "name value unit" lines or --json).

Every bench script collects its figures into a `Report`, then prints either one line per
figure (``actors.kernel_tell_per_s 81000 msg/s``) or, with ``--json``, one JSON object. Long
phases show a `rich` progress bar on stderr, so stdout stays exactly the figures; in
``--json`` mode the bar is switched off altogether (a test or CI reads the output). `machine()`
describes the host, because on shared machines a figure without its machine means little.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Value = int | float | bool | str


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: Value
    unit: str = ""


@dataclass(slots=True)
class Report:
    """The figures of one bench run, printed once at the end (figures first, text never mixed)."""

    bench: str
    figures: list[Figure] = field(default_factory=list)

    def add(self, name: str, value: Value, unit: str = "") -> Value:
        """Record `<bench>.<name>`; returns `value` so a figure can be used right away."""
        self.figures.append(Figure(f"{self.bench}.{name}", value, unit))
        return value

    def lines(self) -> list[str]:
        return [" ".join(filter(None, (f.name, _fmt(f.value), f.unit))) for f in self.figures]

    def as_json(self) -> str:
        return json.dumps(
            {
                "bench": self.bench,
                "machine": machine(),
                "figures": {f.name: {"value": f.value, "unit": f.unit} for f in self.figures},
            },
            indent=None,
        )

    def emit(self, as_json: bool) -> None:
        print(self.as_json() if as_json else "\n".join(self.lines()), flush=True)


def _fmt(value: Value) -> str:
    # Rates are whole numbers (the noise is far above one unit); ratios and seconds keep
    # enough digits to compare runs.
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 100:
            return str(round(value))
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def progress(enabled: bool = True) -> Progress:
    """A progress bar factory on stderr; `enabled=False` (``--json``) shows nothing."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def best(rates: Sequence[float]) -> float:
    """The best of repeated rates: noise from other tenants only ever slows a run down."""
    return max(rates)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


@functools.cache
def _process() -> Any:
    import psutil  # the test extra (make bench installs it); only RSS needs it

    return psutil.Process()


def rss_mb() -> float:
    """This process's resident set size in MiB."""
    return float(_process().memory_info().rss) / 2**20


def load_average() -> float:
    """The machine's 1-minute load average (0 where the OS does not say): on a shared machine
    the figures of a run mean little without it."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return 0.0


def machine() -> str:
    """CPU model, cores, RAM, Python version and OS, on one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux: platform's answer stands
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        ram_text = f"{ram:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        ram_text = "RAM unknown"
    python = f"{platform.python_implementation()} {platform.python_version()}"
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {cores} cores, {ram_text}, {python}, {system}"


def bench_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser with the options every bench takes: `--quick` (a few seconds) and `--json`."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc)
    parser.add_argument("--quick", action="store_true", help="small N: a few seconds in all")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return parser


def parse_args(name: str, doc: str | None, argv: Sequence[str] | None) -> argparse.Namespace:
    return bench_parser(name, doc).parse_args(argv)


def stopwatch() -> Callable[[], float]:
    """Start a clock; calling the result returns the seconds since."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


def note(message: str, enabled: bool = True) -> None:
    """A human-readable remark on stderr (never mixed into the figures on stdout)."""
    if enabled:
        print(message, file=sys.stderr, flush=True)
