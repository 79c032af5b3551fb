"""The trio I/O bridge (IoResult values, errors, cancellation) and actor timers."""

from __future__ import annotations

import functools

import pytest
import trio

from actors.kernel import (
    ActorUnavailable,
    AskTimeout,
    ChildSpec,
    IoError,
    IoResult,
    KernelError,
    Runtime,
)
from tests.actors.kernel_probes import Probe, Record, Worker
from tests.helpers import eventually


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def runtime(probe: Probe):
    runtime = Runtime.start([ChildSpec("w", functools.partial(Worker, probe=probe))])
    yield runtime
    runtime.shutdown()


def io_results(probe: Probe) -> list[IoResult]:
    return [e[2] for e in probe.of("io")]


async def answer() -> int:
    await trio.sleep(0)
    return 42


async def fail() -> None:
    await trio.sleep(0)
    raise ValueError("the coroutine failed")


async def forever() -> None:
    await trio.sleep_forever()


def test_a_coroutine_value_comes_back_as_a_message(runtime: Runtime, probe: Probe) -> None:
    request_id = runtime.ask("client/w", ("io", answer))
    results = eventually(lambda: io_results(probe))
    assert results == [IoResult(request_id, value=42)]
    assert results[0].ok and results[0].unwrap() == 42


def test_a_coroutine_error_comes_back_as_an_io_result_error(runtime: Runtime, probe: Probe) -> None:
    request_id = runtime.ask("client/w", ("io", fail))
    [result] = eventually(lambda: io_results(probe))
    assert result.request_id == request_id and not result.ok
    assert isinstance(result.error, ValueError)
    with pytest.raises(ValueError, match="the coroutine failed"):
        result.unwrap()
    assert runtime.ask("client/w", Record("still serving")) == "still serving"
    assert probe.starts("client/w") == 1


def test_shutdown_cancels_running_tasks(probe: Probe) -> None:
    runtime = Runtime.start([ChildSpec("w", functools.partial(Worker, probe=probe))])
    bridge = runtime.io
    runtime.ask("client/w", ("io", forever))
    eventually(lambda: bridge.tasks_running == 1)
    runtime.shutdown()
    assert bridge.tasks_running == 0 and not bridge.alive
    with pytest.raises(ActorUnavailable):
        runtime.io  # noqa: B018


def test_a_cancelled_task_reports_an_io_error(probe: Probe) -> None:
    runtime = Runtime.start([ChildSpec("w", functools.partial(Worker, probe=probe))])
    try:
        bridge = runtime.io
        runtime.ask("client/w", ("io", forever))
        eventually(lambda: bridge.tasks_running == 1)
        bridge.stop()  # the loop goes away under a running request
        [result] = eventually(lambda: io_results(probe))
        assert isinstance(result.error, IoError) and "cancelled" in str(result.error)
    finally:
        runtime.shutdown()


def test_blocking_run_at_the_edge(runtime: Runtime) -> None:
    assert runtime.io.run(answer, timeout=5) == 42
    with pytest.raises(ValueError):
        runtime.io.run(fail, timeout=5)
    with pytest.raises(AskTimeout):
        runtime.io.run(forever, timeout=0.05)


def test_send_after_delivers_and_cancel_prevents(runtime: Runtime, probe: Probe) -> None:
    runtime.ask("client/w", ("after", 0.01, Record("fired")))
    handle = runtime.ask("client/w", ("after", 0.05, Record("cancelled")))
    handle.cancel()
    runtime.ask("client/w", ("after", 0.1, Record("later")))
    eventually(lambda: probe.values("client/w") == ["fired", "later"])
    assert runtime.scheduler.pending() == 0


def test_ask_errors_are_typed(runtime: Runtime) -> None:
    with pytest.raises(ActorUnavailable) as unavailable:
        runtime.ask("client/nobody", Record(1))
    assert unavailable.value.code == "UNAVAILABLE"
    with pytest.raises(AskTimeout) as timeout:
        runtime.ask("client/w", ("io", answer), timeout=0)
    assert timeout.value.code == "ASK_TIMEOUT"
    # the kernel's own errors, one base, nothing of duplex (the facade maps them)
    assert isinstance(unavailable.value, KernelError) and isinstance(timeout.value, KernelError)
    assert issubclass(IoError, KernelError)
    assert all(c.__module__ == "actors.kernel.errors" for c in type(timeout.value).__mro__[:-3])
