"""Operator commands at the runtime's edge (what the debug console sends): inspect, crash,
restart and passivate an actor, and the passivated actors the tree can show."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator

import pytest

from actors.kernel import (
    ActorUnavailable,
    ChildSpec,
    Intensity,
    NotApplicable,
    Runtime,
    RuntimeConfig,
    Strategy,
    supervisor_spec,
    virtual_supervisor_spec,
)
from tests.actors.kernel_probes import Probe, Record, Worker
from tests.helpers import eventually

FAST = Intensity(max_restarts=50, period=10.0, backoff_initial=0.005, backoff_max=0.01)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def runtime(probe: Probe) -> Iterator[Runtime]:
    worker = functools.partial(Worker, probe=probe)
    children = [
        supervisor_spec(
            "g", [ChildSpec("a", worker), ChildSpec("b", worker)], Strategy.ONE_FOR_ALL, FAST
        ),
        virtual_supervisor_spec("conns", worker, FAST),
    ]
    with Runtime.start(children, config=RuntimeConfig(passivate_after=60.0)) as runtime:
        yield runtime


def test_inspect_describes_the_activation_on_its_own_thread(runtime: Runtime) -> None:
    runtime.tell("client/g/a", Record(1))
    eventually(lambda: runtime.tree().find("client/g/a").handled == 1)  # type: ignore[union-attr]
    description = runtime.inspect("client/g/a")
    assert description["kind"] == "worker"
    assert description["parent"] == "client/g"
    assert description["virtual"] is False
    assert description["state"] == {"seen": 1}
    assert description["details"] == {}
    with pytest.raises(ActorUnavailable):
        runtime.inspect("client/nobody")


def test_a_crash_on_request_is_restarted_by_the_supervisor_strategy(
    runtime: Runtime, probe: Probe
) -> None:
    runtime.crash("client/g/a", "on purpose")
    eventually(lambda: probe.starts("client/g/b") == 2, what="one_for_all restarted b too")
    node = runtime.tree().find("client/g/a")
    assert node is not None and node.restarts == 1
    assert node.last_error is not None and "on purpose" in node.last_error
    assert runtime.directory.counters["crashes"] == 1
    with pytest.raises(NotApplicable):
        runtime.crash("client")
    with pytest.raises(ActorUnavailable):
        runtime.crash("client/g/zzz")


def test_a_restart_on_request_touches_only_that_child(runtime: Runtime, probe: Probe) -> None:
    runtime.restart("client/g/b")
    eventually(lambda: probe.starts("client/g/b") == 2, what="b restarted")
    eventually(lambda: runtime.tree().find("client/g/b").status == "live")  # type: ignore[union-attr]
    assert probe.starts("client/g/a") == 1  # no strategy applied: nothing crashed
    assert probe.of("stop", "client/g/b")  # a clean stop: stopped() ran
    node = runtime.tree().find("client/g/b")
    assert node is not None and node.restarts == 1 and node.last_error is None
    assert runtime.directory.counters["crashes"] == 0
    with pytest.raises(NotApplicable):
        runtime.restart("client")


def test_a_virtual_actor_restarts_and_passivates_on_request(runtime: Runtime, probe: Probe) -> None:
    runtime.tell("client/conns/7", Record("hello"))
    eventually(lambda: probe.values("client/conns/7") == ["hello"])
    runtime.restart("client/conns/7")
    eventually(lambda: probe.starts("client/conns/7") == 2, what="activated again")
    node = runtime.tree().find("client/conns/7")
    assert node is not None and node.restarts == 1 and node.status == "live"
    assert runtime.directory.counters["passivations"] == 0

    with pytest.raises(NotApplicable):
        runtime.passivate("client/g/a")
    runtime.passivate("client/conns/7")
    eventually(lambda: runtime.directory.view("client/conns/7") is None, what="passivated")
    assert runtime.tree().find("client/conns/7") is None  # the plain tree: live actors only
    shown = runtime.tree(passivated=True).find("client/conns/7")
    assert shown is not None and shown.status == "passivated" and shown.kind == "worker"

    runtime.tell("client/conns/7", Record("again"))  # activated again: no longer passivated
    eventually(lambda: probe.values("client/conns/7") == ["hello", "again"])
    shown = runtime.tree(passivated=True).find("client/conns/7")
    assert shown is not None and shown.status == "live"
    with pytest.raises(ActorUnavailable):
        runtime.passivate("client/conns/unknown")


def test_a_passivation_asked_while_inspected_happens_and_looking_activates_nothing(
    runtime: Runtime, probe: Probe
) -> None:
    """A console inspects the selected actor every fraction of a second: an inspection that
    waits behind the passivation must not cancel it, and one that comes after it must not
    activate the actor again."""
    address = "client/conns/8"
    gate = threading.Event()
    runtime.tell(address, ("block", gate))  # busy in a handler: what comes next waits
    eventually(lambda: probe.of("blocked", address), what="blocked")
    runtime.passivate(address)
    answers: list[dict] = []
    looking = threading.Thread(target=lambda: answers.append(runtime.inspect(address)))
    looking.start()  # its Inspect waits in the mailbox behind the Passivate
    eventually(lambda: _mailbox(runtime, address) >= 2, what="both waiting")
    gate.set()
    looking.join(10)
    assert answers and answers[0]["kind"] == "worker"
    eventually(lambda: runtime.directory.view(address) is None, what="passivated all the same")
    with pytest.raises(ActorUnavailable):
        runtime.inspect(address)
    with pytest.raises(ActorUnavailable):
        runtime.crash(address)
    assert runtime.directory.view(address) is None
    assert probe.starts(address) == 1  # neither looking nor the crash request activated it


def _mailbox(runtime: Runtime, address: str) -> int:
    view = runtime.directory.view(address)
    return 0 if view is None or view.actor is None else view.actor.actor_inbox.qsize()
