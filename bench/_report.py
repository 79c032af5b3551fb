"""Shared output helpers for the bench scripts: how every bench shows its progress and its
figures, decided here once.

Every bench script collects its figures into a `Report` and prints them at the end: on a
terminal as a rich table (figure, value, unit); piped, one line per figure
(``actors.kernel_tell_per_s 81000 msg/s``), which scripts and bench/RESULTS.md use; with
``--json``, one JSON object. Long phases report progress on stderr, so stdout stays exactly
the figures: a rich progress bar on a terminal, and when stderr is piped (CI, ``| tee``) a
plain line when a phase starts, every few seconds while it runs and when it ends, so a log
never sits silent for half a minute. In ``--json`` mode progress is off altogether (a test or
CI reads the output). `machine()` describes the host, because on shared machines a figure
without its machine means little.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

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

    def table(self) -> Table:
        table = Table(title=f"bench.{self.bench}", title_justify="left")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_column("unit")
        for figure in self.figures:
            name = figure.name.removeprefix(f"{self.bench}.")
            table.add_row(name, _fmt(figure.value), figure.unit)
        return table

    def emit(self, as_json: bool, *, as_table: bool | None = None) -> None:
        """Print the figures: JSON, a table (default: when stdout is a terminal), or lines."""
        if as_json:
            print(self.as_json(), flush=True)
        elif sys.stdout.isatty() if as_table is None else as_table:
            Console(file=sys.stdout).print(self.table())
        else:
            print("\n".join(self.lines()), flush=True)


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


PROGRESS_EVERY_S = 5.0  # seconds between progress lines when stderr is piped


def progress(
    enabled: bool = True, *, live: bool | None = None, every: float = PROGRESS_EVERY_S
) -> Progress:
    """Progress on stderr: a live bar on a terminal, `PipedProgress` lines when `live` is
    False (default: when stderr is not a terminal); `enabled=False` (``--json``) shows
    nothing. Benches use either through the same calls (add_task, advance, update…)."""
    if enabled and not (sys.stderr.isatty() if live is None else live):
        return PipedProgress(every)
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


class PipedProgress(Progress):
    """`Progress` for a pipe: no bar, but a line on stderr when a task starts, one for each
    running task every `every` seconds (from a thread of its own, so a long step with no
    `advance` is shown too), and one when it finishes or is removed."""

    def __init__(self, every: float = PROGRESS_EVERY_S, file: TextIO | None = None) -> None:
        super().__init__(disable=True)
        self._every = every
        self._file = file
        self._closing = threading.Event()
        self._ticker: threading.Thread | None = None
        self._told_finished: set[TaskID] = set()

    def start(self) -> None:
        super().start()
        self._closing.clear()
        self._ticker = threading.Thread(target=self._tick, name="bench-progress", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        self._closing.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        super().stop()

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        total = self._tasks[task_id].total
        self._say(f"{_plain(description)}: started" + (f", {total:,.0f} to do" if total else ""))
        return task_id

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._if_finished(task_id)

    def update(self, task_id: TaskID, *args: Any, **kwargs: Any) -> None:
        super().update(task_id, *args, **kwargs)
        self._if_finished(task_id)

    def remove_task(self, task_id: TaskID) -> None:
        task = self._tasks.get(task_id)
        if task is not None and task_id not in self._told_finished:
            self._say(self._line(task, "stopped"))
        super().remove_task(task_id)

    def _if_finished(self, task_id: TaskID) -> None:
        task = self._tasks.get(task_id)
        if task is not None and task.finished and task_id not in self._told_finished:
            self._told_finished.add(task_id)
            self._say(self._line(task, "done"))

    def _tick(self) -> None:
        while not self._closing.wait(self._every):
            for task in self.tasks:
                if not task.finished:
                    self._say(self._line(task, "running"))

    @staticmethod
    def _line(task: Task, state: str) -> str:
        done = f"{task.completed:,.0f}" + (f"/{task.total:,.0f}" if task.total else "")
        elapsed = task.elapsed or 0.0
        return f"{_plain(task.description)}: {state}, {done} in {elapsed:.0f} s"

    def _say(self, line: str) -> None:
        print(line, file=self._file or sys.stderr, flush=True)


def _plain(description: str) -> str:
    return Text.from_markup(description).plain


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
