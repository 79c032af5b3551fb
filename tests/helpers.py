"""Small test utilities shared by every test package: deadline-bounded polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(
    condition: Callable[[], T],
    timeout: float = 5.0,
    what: str = "condition",
    explain: Callable[[], Any] | None = None,
    interval: float = 0.002,
) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds,
    saying `what` and, if given, `explain()` (the state that was not right)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f": {explain()}" if explain is not None else f" (last value: {value!r})"
            raise AssertionError(f"{what} not met within {timeout}s{detail}")
        time.sleep(interval)
