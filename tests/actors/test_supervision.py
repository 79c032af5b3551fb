"""Supervision: strategies, restart types, intensity and escalation, crashes in started()."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator

import pytest

from actors.kernel import (
    ActorUnavailable,
    ChildSpec,
    Intensity,
    Restart,
    Runtime,
    RuntimeConfig,
    Strategy,
    supervisor_spec,
)
from tests.actors.kernel_probes import Crash, Exit, Probe, Record, StopNormally, Worker
from tests.helpers import eventually

FAST = Intensity(max_restarts=5, period=5.0, backoff_initial=0.01, backoff_max=0.05)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def start(probe: Probe) -> Iterator:
    runtimes: list[Runtime] = []

    def start_runtime(children, **kwargs) -> Runtime:
        kwargs.setdefault("strategy", Strategy.ONE_FOR_ONE)
        kwargs.setdefault("intensity", FAST)
        runtime = Runtime.start(children, **kwargs)
        runtimes.append(runtime)
        return runtime

    yield start_runtime
    for runtime in runtimes:
        runtime.shutdown()


def workers(probe: Probe, *names: str, restart: Restart = Restart.PERMANENT) -> list[ChildSpec]:
    return [ChildSpec(n, functools.partial(Worker, probe=probe), restart) for n in names]


def group(probe: Probe, strategy: Strategy) -> ChildSpec:
    return supervisor_spec("g", workers(probe, "a", "b", "c"), strategy, FAST)


@pytest.mark.parametrize(
    ("strategy", "restarted", "untouched"),
    [
        (Strategy.ONE_FOR_ONE, ["b"], ["a", "c"]),
        (Strategy.ONE_FOR_ALL, ["a", "b", "c"], []),
        (Strategy.REST_FOR_ONE, ["b", "c"], ["a"]),
    ],
)
def test_strategy_restarts_exactly_the_affected_children(
    start, probe: Probe, strategy: Strategy, restarted: list[str], untouched: list[str]
) -> None:
    runtime = start([group(probe, strategy)])
    eventually(lambda: all(probe.starts(f"client/g/{n}") == 1 for n in "abc"))

    runtime.tell("client/g/b", Crash())

    for name in restarted:
        eventually(lambda name=name: probe.starts(f"client/g/{name}") == 2, what=name)
    for name in restarted:  # every restarted child answers again
        assert runtime.ask(f"client/g/{name}", Record(name)) == name
    for name in untouched:
        assert probe.starts(f"client/g/{name}") == 1
        assert not probe.of("stop", f"client/g/{name}")
    # the others were stopped cleanly, in reverse start order; the crashed one never "stops"
    stopped = [e[1].rsplit("/", 1)[1] for e in probe.of("stop")]
    assert stopped == [n for n in reversed(restarted) if n != "b"]
    node = runtime.tree().find("client/g/b")
    assert node is not None and node.restarts == 1 and "on purpose" in (node.last_error or "")


def test_escalation_past_intensity_restarts_the_parent(start, probe: Probe) -> None:
    inner = supervisor_spec(
        "inner",
        workers(probe, "w"),
        Strategy.ONE_FOR_ONE,
        Intensity(max_restarts=2, period=30.0, backoff_initial=0.001, backoff_max=0.002),
    )
    runtime = start([inner])
    eventually(lambda: probe.starts("client/inner/w") == 1)
    inner_before = runtime.tree().find("client/inner")
    assert inner_before is not None and inner_before.activation == 0

    for crashes in (1, 2):
        runtime.tell("client/inner/w", Crash())
        eventually(lambda c=crashes: probe.starts("client/inner/w") == c + 1)
    # the third crash in the period is one too many: `inner` gives up, `client` restarts it
    runtime.tell("client/inner/w", Crash())

    def inner_restarted() -> bool:
        node = runtime.tree().find("client/inner")
        return node is not None and node.activation == 1 and node.status == "live"

    eventually(inner_restarted)
    eventually(lambda: probe.starts("client/inner/w") == 4)
    assert runtime.ask("client/inner/w", Record("alive")) == "alive"
    assert not runtime.failed.is_set()


def test_escalation_from_the_root_fails_the_runtime(start, probe: Probe) -> None:
    runtime = start(workers(probe, "w"), intensity=Intensity(max_restarts=0, period=30.0))
    eventually(lambda: probe.starts("client/w") == 1)
    runtime.tell("client/w", Crash())
    assert runtime.failed.wait(5.0)
    assert runtime.failure is not None and "restarts" in (runtime.failure.error or "")


@pytest.mark.parametrize(
    ("restart", "after_normal_stop", "after_crash"),
    [
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, False, True),
        (Restart.TEMPORARY, False, False),
    ],
)
def test_restart_types(
    start, probe: Probe, restart: Restart, after_normal_stop: bool, after_crash: bool
) -> None:
    runtime = start(
        workers(probe, "stops", restart=restart) + workers(probe, "crashes", restart=restart)
    )
    eventually(lambda: probe.starts("client/stops") == probe.starts("client/crashes") == 1)

    runtime.tell("client/stops", StopNormally())
    runtime.tell("client/crashes", Crash())

    for name, expected in (("stops", after_normal_stop), ("crashes", after_crash)):
        address = f"client/{name}"
        if expected:
            eventually(lambda a=address: probe.starts(a) == 2, what=f"{name} restarted")
            assert runtime.ask(address, Record(1)) == 1
        else:
            eventually(lambda a=address: runtime.directory.view(a) is None, what=f"{name} gone")
            with pytest.raises(ActorUnavailable):
                runtime.ask(address, Record(1))
            assert probe.starts(address) == 1


def test_a_crash_in_started_is_a_crash_and_loses_no_message(start, probe: Probe) -> None:
    probe.crash_on_start["client/w"] = 2  # the first two activations fail in started()
    runtime = start(workers(probe, "w"))
    for i in range(20):
        runtime.tell("client/w", Record(i))
    eventually(lambda: len(probe.values("client/w")) == 20)
    assert probe.values("client/w") == list(range(20))
    assert probe.starts("client/w") == 3
    node = runtime.tree().find("client/w")
    assert node is not None and node.restarts == 2


def test_a_constructor_that_raises_is_a_crash(start, probe: Probe) -> None:
    attempts = []

    def flaky(ctx):
        attempts.append(ctx.activation)
        if len(attempts) == 1:
            raise ValueError("bad constructor")
        return Worker(ctx, probe)

    runtime = start([ChildSpec("w", flaky)])
    eventually(lambda: probe.starts("client/w") == 1)
    assert attempts == [0, 1]
    assert runtime.ask("client/w", Record("x")) == "x"


def test_messages_sent_during_restarts_arrive_in_order(start, probe: Probe) -> None:
    slow = Intensity(max_restarts=10, period=10.0, backoff_initial=0.05, backoff_max=0.2)
    runtime = start(workers(probe, "w"), intensity=slow)
    eventually(lambda: probe.starts("client/w") == 1)

    sent = []
    for i in range(3000):
        if i in (500, 1000, 1500):  # the 2nd and 3rd restart wait in backoff: buffering
            runtime.tell("client/w", Crash())
        else:
            runtime.tell("client/w", Record(i))
            sent.append(i)

    eventually(lambda: len(probe.values("client/w")) >= len(sent), timeout=10)
    assert probe.values("client/w") == sent
    assert probe.starts("client/w") == 4


def test_base_exception_in_a_handler_crashes_only_that_actor(start, probe: Probe) -> None:
    runtime = start(workers(probe, "a", "b"))
    runtime.tell("client/a", Exit())
    eventually(lambda: probe.starts("client/a") == 2)
    assert runtime.ask("client/b", Record("b")) == "b"
    assert runtime.ask("client/a", Record("a")) == "a"
    assert probe.starts("client/b") == 1


def test_an_exception_while_answering_an_ask_goes_to_the_asker(start, probe: Probe) -> None:
    runtime = start(workers(probe, "w"))
    with pytest.raises(RuntimeError, match="asked to crash"):
        runtime.ask("client/w", Crash("asked to crash"))
    assert runtime.ask("client/w", Record(2)) == 2
    assert probe.starts("client/w") == 1


def test_no_thread_outlives_shutdown(probe: Probe) -> None:
    before = set(threading.enumerate())
    runtime = Runtime.start(
        [group(probe, Strategy.ONE_FOR_ONE)],
        config=RuntimeConfig(shutdown_timeout=5.0),
    )
    runtime.tell("client/g/a", Crash())
    eventually(lambda: probe.starts("client/g/a") == 2)
    assert len(set(threading.enumerate()) - before) >= 6  # 5 actors + clock + trio
    runtime.shutdown()
    eventually(lambda: set(threading.enumerate()) <= before, what="runtime threads gone")
    assert sorted(e[1] for e in probe.of("stop")) == [f"client/g/{n}" for n in "abc"]
