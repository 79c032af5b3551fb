"""I/O results matched by request id: the callback form, and exactly one `IoResult` per
submission whatever happens to the I/O thread (restarting, stopped, spawn failure)."""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
import trio

from actors.kernel import (
    ChildSpec,
    Intensity,
    IoError,
    IoResult,
    Runtime,
    RuntimeConfig,
    Strategy,
    virtual_supervisor_spec,
)
from tests.actors.kernel_probes import Crash, GatedIo, IoControl, Probe, Worker, gated
from tests.helpers import eventually

FAST = Intensity(max_restarts=10, period=10.0, backoff_initial=0.01, backoff_max=0.05)


async def answer() -> int:
    await trio.sleep(0)
    return 42


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def gates() -> Iterator[list[threading.Event]]:
    events: list[threading.Event] = []
    yield events
    for event in events:  # a failing test must not leave a coroutine or a started() waiting
        event.set()


def workers(probe: Probe, *names: str) -> list[ChildSpec]:
    return [ChildSpec(n, functools.partial(Worker, probe=probe)) for n in names]


def results(probe: Probe, kind: str, address: str) -> dict[int, IoResult]:
    """The results `address` got, by request id; fails if an id came back twice."""
    got = [e[2] for e in probe.of(kind, address)]
    counts = Counter(r.request_id for r in got)
    assert all(n == 1 for n in counts.values()), counts
    return {r.request_id: r for r in got}


def test_the_callback_gets_its_result_and_receive_does_not(probe: Probe) -> None:
    with Runtime.start(workers(probe, "w")) as runtime:
        with_callback = runtime.ask("client/w", ("io-cb", answer))
        plain = runtime.ask("client/w", ("io", answer))

        eventually(lambda: with_callback in results(probe, "cb", "client/w"))
        eventually(lambda: plain in results(probe, "io", "client/w"))
        assert results(probe, "cb", "client/w") == {with_callback: IoResult(with_callback, 42)}
        assert results(probe, "io", "client/w") == {plain: IoResult(plain, 42)}
        actor = runtime.directory.view("client/w").actor
        assert actor is not None and actor.io_pending == 0


def test_a_result_for_a_crashed_activation_goes_to_receive(probe: Probe, gates) -> None:
    gate = threading.Event()
    gates.append(gate)
    with Runtime.start(workers(probe, "w"), strategy=Strategy.ONE_FOR_ONE) as runtime:
        request_id = runtime.ask("client/w", ("io-cb", gated(gate)))
        runtime.tell("client/w", Crash())
        eventually(lambda: probe.starts("client/w") == 2, what="w restarted")
        gate.set()

        # the new activation never registered that id: its receive gets the result
        eventually(lambda: request_id in results(probe, "io", "client/w"))
        assert results(probe, "io", "client/w")[request_id].value == 42
        assert results(probe, "cb", "client/w") == {}


def test_every_submission_gets_one_result_across_an_io_restart(probe: Probe, gates) -> None:
    control = IoControl()
    control.hold_from_activation = 1  # the restarted io waits for the test
    gates.append(control.gate)
    in_flight = threading.Event()
    gates.append(in_flight)
    runtime = Runtime.start(
        workers(probe, "w1", "w2"),
        strategy=Strategy.ONE_FOR_ONE,  # the submitters stay up while io restarts
        intensity=FAST,
        io_factory=functools.partial(GatedIo, control=control),
    )
    try:
        submitters = ("client/w1", "client/w2")
        running = runtime.ask("client/w1", ("io-cb", gated(in_flight)))
        eventually(lambda: runtime.io.tasks_running == 1, what="w1's request running")

        runtime.tell("client/io", Crash("io crashed on purpose"))
        eventually(lambda: not runtime.io_running, what="io down")
        down: dict[str, list[int]] = {a: [] for a in submitters}
        for round_ in range(5):
            for address in submitters:
                form = "io-cb" if round_ % 2 else "io"
                down[address].append(runtime.ask(address, (form, answer)))
        assert not runtime.io_running  # all of them were submitted while io was down

        # the request running when io crashed was cancelled: one IoError for it
        eventually(lambda: running in results(probe, "cb", "client/w1"), what="cancelled")
        cancelled = results(probe, "cb", "client/w1")[running]
        assert isinstance(cancelled.error, IoError) and "cancelled" in str(cancelled.error)
        # and each submission made while io was down got exactly one IoError
        for address, ids in down.items():

            def all_failed(address: str = address, ids: list[int] = ids) -> bool:
                got = results(probe, "io", address) | results(probe, "cb", address)
                return all(i in got for i in ids)

            eventually(all_failed, what=f"{address}'s results")
            got = results(probe, "io", address) | results(probe, "cb", address)
            for request_id in ids:
                error = got[request_id].error
                assert isinstance(error, IoError) and "restarting" in str(error), error

        control.gate.set()
        eventually(lambda: runtime.io_running, what="io restarted")
        after = {a: runtime.ask(a, ("io-cb", answer)) for a in submitters}
        for address, request_id in after.items():
            eventually(lambda a=address, r=request_id: r in results(probe, "cb", a))
            assert results(probe, "cb", address)[request_id] == IoResult(request_id, 42)
        assert probe.starts("client/w1") == probe.starts("client/w2") == 1
        node = runtime.tree().find("client/io")
        assert node is not None and node.activation == 1 and node.restarts == 1
    finally:
        runtime.shutdown()


def test_an_io_crash_at_boot_does_not_fail_the_first_submissions(probe: Probe) -> None:
    control = IoControl()
    control.crash_on_start = 1  # io's first activation fails in started()
    probe.submit_on_start["client/w"] = answer  # w submits from its started()
    with Runtime.start(
        workers(probe, "w"), intensity=FAST, io_factory=functools.partial(GatedIo, control=control)
    ) as runtime:
        [(_, _, request_id)] = probe.of("submitted", "client/w")
        eventually(lambda: request_id in results(probe, "io", "client/w"))
        # w started only once io was ready: its first submission ran
        assert results(probe, "io", "client/w")[request_id] == IoResult(request_id, 42)
        assert probe.starts("client/w") == 1
        node = runtime.tree().find("client/io")
        assert node is not None and node.restarts == 1


def test_submissions_that_cannot_run_get_an_error_result(probe: Probe) -> None:
    with Runtime.start(workers(probe, "w")) as runtime:
        not_a_coroutine = runtime.ask("client/w", ("io-cb", lambda: 42))
        eventually(lambda: not_a_coroutine in results(probe, "cb", "client/w"))
        assert isinstance(results(probe, "cb", "client/w")[not_a_coroutine].error, TypeError)

        bridge = runtime.io
        bridge.stop()  # the loop is gone, the io actor does not know yet
        after_stop = runtime.ask("client/w", ("io-cb", answer))
        eventually(lambda: after_stop in results(probe, "cb", "client/w"))
        assert isinstance(results(probe, "cb", "client/w")[after_stop].error, IoError)

        # a request the loop accepted as it stopped finds no nursery: it still reports
        bridge._spawn("client/w", 10**9, answer, ())
        eventually(lambda: 10**9 in results(probe, "io", "client/w"))
        error = results(probe, "io", "client/w")[10**9].error
        assert isinstance(error, IoError) and "stopping" in str(error)


def test_shutdown_tells_a_result_for_every_running_request(probe: Probe, gates) -> None:
    gate = threading.Event()
    gates.append(gate)
    runtime = Runtime.start(workers(probe, "w"))
    request_id = runtime.ask("client/w", ("io-cb", gated(gate)))
    eventually(lambda: runtime.io.tasks_running == 1)
    runtime.shutdown()
    # w stopped before io: the cancellation's IoResult waits at w's address, told once
    view = runtime.directory.view("client/w")
    assert view is not None and view.buffered == 1
    assert results(probe, "cb", "client/w") == {}
    assert request_id


def test_an_actor_waiting_for_io_does_not_passivate(probe: Probe, gates) -> None:
    gate = threading.Event()
    gates.append(gate)
    spec = virtual_supervisor_spec("v", functools.partial(Worker, probe=probe))
    with Runtime.start([spec], config=RuntimeConfig(passivate_after=0.1)) as runtime:
        request_id = runtime.ask("client/v/1", ("io-cb", gated(gate)))
        actor = runtime.directory.view("client/v/1").actor
        assert actor is not None
        handled = actor.handled
        # idle checks come and go (every 25 ms past the first 0.1 s) without passivating
        eventually(lambda: actor.handled >= handled + 4, what="idle checks")
        assert runtime.directory.view("client/v/1").actor is actor
        gate.set()
        eventually(lambda: request_id in results(probe, "cb", "client/v/1"))
        eventually(lambda: runtime.directory.view("client/v/1") is None, what="passivated")
        assert probe.starts("client/v/1") == 1
