"""The demo's acts, in the order they play: each is a function of the `Stage` that prints a
heading, does one thing to the network and checks what that did. `ACTS` is the play; the
relay group (two chat relays serving it, members joining through its group link, rounds of
messages while each relay is closed in turn, then a member leaving it) follows the
peer-to-peer group.

A second run on the same work directory plays the same acts on what the first one stored:
the servers come back on their addresses, the clients reopen their files, the contacts and
the relays' addresses are found again instead of made, a new group and a new relay group
are made next to the old ones, and the old ones are shown to deliver still.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from actors.agent.sessions import connection_address
from actors.chat import events as ce
from actors.chat.chat import owner_address
from actors.chat.model import GroupStatus, Owner, OwnerKind, RosterStatus
from actors.demo.child import MemberProcess
from actors.demo.stage import OWNER, RELAY_SERVERS, SERVER_NAMES, WAIT, Stage, until


def heading(stage: Stage, text: str) -> None:
    stage.console.print(f"\n[bold]{text}")


def counted(number: int, thing: str, things: str = "") -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {things or thing + 's'}"


def claim(text: str, why: str) -> str:
    """`text`, with what went wrong after it when something did."""
    return f"{text} ({why})" if why else text


def servers_start(stage: Stage) -> None:
    heading(stage, "Two queue servers on loopback")
    stored = stage.state.get("servers", {})
    for name in SERVER_NAMES:
        server = stage.servers.start(name, stored.get(name))
        stage.console.print(f"  server {name}: {server.address}")
    stage.save_state()
    for name in SERVER_NAMES:
        if name in stored:
            stage.checks.check(
                f"server {name} serves its address of the previous run (identity in its "
                "database, port in the state file)",
                stage.servers.reused[name],
            )
        else:
            stage.checks.check(f"server {name} listens on 127.0.0.1", name in stage.servers.running)


def cast_opens(stage: Stage) -> None:
    heading(
        stage,
        f"An owner and {counted(len(stage.members), 'member')}, and two chat relays: "
        "each a chat client",
    )
    started = time.monotonic()
    existed = {name: (stage.workdir / f"{name}.db").exists() for name in stage.cast}
    for name in stage.cast:
        stage.open_client(name)
    elapsed = time.monotonic() - started
    reopened = sum(existed.values())
    if reopened == len(existed):
        told = f"reopened {reopened} clients from their files"
    elif reopened:  # a work directory of a demo with a smaller cast (before the relays)
        told = f"reopened {reopened} clients from their files, opened {len(existed) - reopened} new"
    else:
        told = f"opened {len(existed)} new clients"
    stage.checks.must(
        f"{told} in {elapsed:.1f} s (the owner on server a, members on b, a relay on each)", True
    )


def contacts_connect(stage: Stage) -> None:
    heading(stage, "Contacts first: the owner sends each member a one-time link")
    owner, owner_inbox = stage.owner, stage.inboxes[OWNER]
    known = stage.contact_rows(OWNER)
    links: dict[str, str] = {}
    for name in stage.members:
        mine, theirs = known.get(name), stage.contact_rows(name).get(OWNER)
        if mine and theirs and mine[2] == theirs[2] == "connected":
            stage.contacts[name] = (mine[0], theirs[0])
        else:
            links[name] = owner.create_contact_link()
    if stage.contacts:
        kept = ", ".join(stage.contacts)
        stage.checks.check(f"contacts of the previous run found again, connected: {kept}", True)
    if not links:
        return
    ready = {n: owner_inbox.wait_for(ce.ContactLink, contact_id=c) for n, c in links.items()}
    stage.checks.must(
        f"{len(links)} links ready (CONTACT_LINK)", all(e is not None for e in ready.values())
    )
    joining = {n: (links[n], stage.clients[n].join_contact(e.link)) for n, e in ready.items()}
    late = [
        name
        for name, (at_owner, at_member) in joining.items()
        if not owner_inbox.wait_for(ce.ContactConnected, contact_id=at_owner)
        or not stage.inboxes[name].wait_for(ce.ContactConnected, contact_id=at_member)
    ]
    stage.checks.must(
        claim(f"{', '.join(joining)} joined: contacts both ways (CONTACT_CONNECTED)", late),
        not late,
    )
    stage.contacts.update(joining)


def group_forms(stage: Stage) -> None:
    run = len(stage.state.get("groups", [])) + 1
    heading(stage, f"A peer-to-peer group: the owner adds every contact (run {run})")
    owner = stage.owner
    started = time.monotonic()
    stage.group_id = group_id = owner.create_group(f"club {run}")
    for name in stage.members:
        owner.add_member(group_id, stage.contacts[name][0])
    invited = [
        n for n in stage.members if stage.inboxes[n].wait_for(ce.GroupInvitation, group_id=group_id)
    ]
    stage.checks.must(
        f"the invitation reached {len(invited)} of {len(stage.members)} members, who join",
        len(invited) == len(stage.members),
    )
    for name in stage.members:
        stage.clients[name].join_group(group_id)
    others = len(stage.members)
    meshed = until(lambda: all(stage.connected_members(n, group_id) == others for n in stage.names))
    stage.checks.must(
        f"each of the {others + 1} clients holds the other {counted(others, 'connected member')} "
        f"({counted(others * (others + 1) // 2, 'member connection')}, "
        f"{time.monotonic() - started:.1f} s)",
        meshed,
    )
    # a later run checks that it still works
    stage.state.setdefault("groups", []).append({"id": group_id, "members": stage.members})
    stage.save_state()


def messages_flow(stage: Stage) -> None:
    heading(stage, "Everyone writes to the group; each message arrives exactly once")
    sent = {
        name: [c.send_group_message(stage.group_id, f"hi from {name}")]
        for name, c in stage.clients.items()
        if name in stage.names
    }
    count = len(sent) * (len(sent) - 1)
    held, why = stage.wait_delivered(sent, stage.group_id)
    stage.checks.must(claim(f"{count} deliveries, each stored and told once", why), held)
    earlier = stage.state.get("groups", [])[:-1]
    for group in earlier[:1] + earlier[1:][-1:]:  # the first run's and the last before this
        group_id, names = group["id"], group["members"]
        members = stage.connected_members(OWNER, group_id)
        stage.checks.check(
            f"the group of an earlier run is still there, {members} of {len(names)} members "
            "connected",
            members == len(names),
        )
        old = {OWNER: [stage.owner.send_group_message(group_id, "the old club still works")]}
        held, why = stage.wait_delivered(old, group_id, [OWNER, *names])
        stage.checks.check(claim("and a message in it reaches every member once", why), held)


def relay_group_forms(stage: Stage) -> None:
    run = len(stage.state.get("relay_groups", [])) + 1
    heading(
        stage, f"A relay group: two chat relays serve it, members join through its link (run {run})"
    )
    addresses = {r: a for r in stage.relays if (a := stage.relay_address(r)) is not None}
    if addresses:
        kept = ", ".join(addresses)
        stage.checks.check(f"the relay addresses of the previous run found again: {kept}", True)
    for relay in [r for r in stage.relays if r not in addresses]:
        address_id = stage.clients[relay].create_relay_address()
        ready = stage.inboxes[relay].wait_for(ce.AddressLink, address_id=address_id)
        stage.checks.must(
            f"{relay} serves as a chat relay: its relay address is ready on server "
            f"{RELAY_SERVERS[relay]} (ADDRESS_LINK)",
            ready is not None,
        )
        addresses[relay] = ready.link
    relays = len(stage.relays)
    started = time.monotonic()
    group_id = stage.owner.create_relay_group(f"town {run}", [addresses[r] for r in stage.relays])
    stage.relay_group_id = group_id
    published = stage.inboxes[OWNER].wait_for(ce.GroupLinkReady, group_id=group_id, relays=relays)
    stage.checks.must(
        f"both relays took the owner's invitation, their relay links verified: the group link "
        f"lists {relays} (GROUP_LINK_READY, {time.monotonic() - started:.1f} s)",
        published is not None,
    )
    full = f"{relays}/{relays} relays active"
    view = stage.owner.group(group_id)
    stage.checks.check(f"the owner's view: {view.relays_active}", view.relays_active == full)

    started = time.monotonic()
    users = {name: stage.clients[name] for name in stage.members}
    prepared = {name: user.prepare_group(published.link) for name, user in users.items()}
    stage.checks.must(
        f"prepare_group: {counted(len(users), 'member')} stored the group read from its link, "
        "joined nowhere yet",
        all(
            prepared[name] == group_id and user.group(group_id).status == GroupStatus.PREPARED
            for name, user in users.items()
        ),
    )
    for user in users.values():
        user.connect_prepared_group(group_id)

    def joined_then_connected(name: str) -> bool:
        inbox = stage.inboxes[name]
        inbox.wait_for(ce.GroupConnected, group_id=group_id)
        told = [
            type(e)
            for e in inbox.drain()
            if isinstance(e, ce.GroupJoined | ce.GroupConnected) and e.group_id == group_id
        ]
        return told == [ce.GroupJoined, ce.GroupConnected]

    late = [name for name in users if not joined_then_connected(name)]
    stage.checks.must(
        claim(
            "connect_prepared_group: each was told GROUP_JOINED, then GROUP_CONNECTED, once",
            ", ".join(late),
        ),
        not late,
    )

    def all_active() -> bool:
        return all(
            (view := user.group(group_id)).relays_active == full
            and view.status == GroupStatus.CONNECTED
            for user in users.values()
        )

    active = until(all_active)
    direct = [name for name in stage.names if stage.member_conns(name, group_id)]
    stage.checks.must(
        claim(
            f"every member's view says {full}, and nobody holds a connection to another member: "
            f"{len(stage.names) * relays} connections, one per user and relay, where the "
            f"peer-to-peer group has {len(users) * (len(users) + 1) // 2} "
            f"({time.monotonic() - started:.1f} s)",
            ", ".join(f"{name} does" for name in direct),
        ),
        active and not direct,
    )
    everyone = [RosterStatus.CONNECTED] * (len(users) + 1)
    rostered = until(lambda: all(stage.roster(r, group_id) == everyone for r in stage.relays))
    stage.checks.must(
        f"each relay's own roster holds the owner and the {counted(len(users), 'member')}, "
        "connected",
        rostered,
    )
    # a later run checks that it still delivers
    stage.state.setdefault("relay_groups", []).append({"id": group_id, "members": stage.members})
    stage.save_state()


def relay_messages_flow(stage: Stage) -> None:
    heading(stage, "Everyone writes to the relay group, in rounds, while each relay closes in turn")
    group_id = stage.relay_group_id
    sent: dict[str, list[str]] = {}

    def everyone_writes(round_: int) -> int:
        """Each user writes once more; returns the deliveries of every round so far."""
        for name in stage.names:
            msg_id = stage.clients[name].send_group_message(group_id, f"{name}, round {round_}")
            sent.setdefault(name, []).append(msg_id)
        return len(sent[OWNER]) * len(stage.names) * (len(stage.names) - 1)

    deliveries = everyone_writes(1)
    held, why = stage.wait_delivered(sent, group_id)
    stage.checks.must(
        claim(
            f"round 1, through both relays: {deliveries} deliveries, each stored and told once, "
            "in each author's order",
            why,
        ),
        held,
    )
    first, second = stage.relays
    for round_, (closed, through) in enumerate([(first, second), (second, first)], start=2):
        if closed == second:
            stage.open_client(first)
            # what each user took from `second` before it closes: round 3 is kept for later
            before = {name: stage.taken_from(name, second, group_id) for name in stage.names}
        client = stage.clients[closed]
        stage.close_client(closed)
        stage.checks.check(
            f"{closed}'s client closed: its runtime stopped", not client.runtime.io_running
        )
        deliveries = everyone_writes(round_)
        held, why = stage.wait_delivered(sent, group_id)
        again = f"{through}, reopened from its file, forwards again: " if through == first else ""
        stage.checks.check(
            claim(
                f"{again}round {round_} arrived through {through} alone, all {deliveries} "
                "deliveries still once each, in each author's order",
                why,
            ),
            held,
        )
    stage.open_client(second)
    others = len(stage.names) - 1

    def copies_taken() -> bool:
        return all(
            stage.taken_from(name, second, group_id) >= before[name] + others
            for name in stage.names
        )

    taken = until(copies_taken)
    held, why = stage.wait_delivered(sent, group_id)
    stage.checks.check(
        claim(
            f"{second} reopened and forwarded round 3 too: each user took its "
            f"{counted(others, 'copy', 'copies')} and dropped them as duplicates, still "
            f"{deliveries} deliveries once each",
            why,
        ),
        taken and held,
    )
    earlier = stage.state.get("relay_groups", [])[:-1]
    for group in earlier[:1] + earlier[1:][-1:]:  # the first run's and the last before this
        old = {OWNER: [stage.owner.send_group_message(group["id"], "the old town still works")]}
        held, why = stage.wait_delivered(old, group["id"], [OWNER, *group["members"]])
        here = [name for name in group["members"] if name in stage.clients]
        absent = len(group["members"]) - len(here)
        stage.checks.check(
            claim(
                f"the relay group of an earlier run still delivers: the owner's message reached "
                f"its {counted(len(here), 'member')} once"
                + (f" (the other {absent} are not in this run's cast)" if absent else ""),
                why,
            ),
            held,
        )


def relay_member_leaves(stage: Stage) -> None:
    group_id, leaver = stage.relay_group_id, stage.members[-1]
    heading(stage, f"{leaver} leaves the relay group; the relays let it go")
    client = stage.clients[leaver]
    conns = stage.relay_conns(leaver, group_id)
    client.leave_group(group_id)
    gone = until(lambda: all(client.agent.connection_status(c) is None for c in conns))
    stage.checks.check(
        f"leave_group: {leaver}'s group is LEFT; it told the relays (x.grp.leave), then "
        f"deleted its {counted(len(conns), 'connection')} to them",
        client.group(group_id).status == GroupStatus.LEFT and gone,
    )
    others = [name for name in stage.members if name != leaver]
    # the owner and the others stay; the leaver alone is LEFT, in every relay's own roster
    after = sorted([RosterStatus.CONNECTED] * (len(others) + 1) + [RosterStatus.LEFT])
    let_go = until(lambda: all(sorted(stage.roster(r, group_id)) == after for r in stage.relays))
    stage.checks.check(
        f"each relay's own roster holds {leaver} as LEFT: nothing more is forwarded to it",
        let_go,
    )
    sent = {OWNER: [stage.owner.send_group_message(group_id, f"after {leaver} left")]}
    held, why = stage.wait_delivered(sent, group_id, [OWNER, *others])
    missed = sent[OWNER][0] not in stage.received(leaver, group_id)
    stage.checks.check(
        claim(
            f"the owner's next message reached the {counted(len(others), 'other member')} "
            f"once, and not {leaver}",
            why,
        ),
        held and missed,
    )
    stage.state["relay_groups"][-1]["members"] = others  # a later run writes to them alone
    stage.save_state()


def server_restarts(stage: Stage) -> None:
    heading(stage, "Server b stops while the owner's message is on its way to the members")
    stage.servers.stop("b")
    sent = {OWNER: [stage.owner.send_group_message(stage.group_id, "through the outage")]}
    time.sleep(0.3)
    nobody = not any(sent[OWNER][0] in stage.received(n, stage.group_id) for n in stage.members)
    stage.checks.check("no member has it while server b is down", nobody)
    before = stage.state["servers"]["b"]
    server = stage.servers.start("b", before)
    stage.checks.must(f"server b is back on the same port {before}", server.address.port == before)
    held, why = stage.wait_delivered(sent, stage.group_id)
    stage.checks.check(claim("every member got it once after the restart", why), held)


def actors_crash(stage: Stage) -> None:
    heading(stage, "Two actors crash on purpose; their supervisors restart them")
    first = stage.members[0]
    owner_group = owner_address(Owner(OwnerKind.GROUP, stage.group_id))
    owner_member_id = stage.owner.group(stage.group_id).member_id
    conn = stage.conn_to_member(first, stage.group_id, owner_member_id)
    to_owner = connection_address(conn or "")
    stage.owner.runtime.crash(owner_group, "crashed on purpose by the demo")
    stage.clients[first].runtime.crash(to_owner, "crashed on purpose by the demo")
    stage.crashed = [(OWNER, owner_group), (first, to_owner)]
    sent = {
        OWNER: [stage.owner.send_group_message(stage.group_id, "after the crash")],
        first: [stage.clients[first].send_group_message(stage.group_id, "me too")],
    }
    for name, address in stage.crashed:
        client = stage.clients[name]

        def restarts(client=client, address=address) -> int:
            node = client.tree().find(address)
            return node.restarts if node is not None else 0

        until(lambda restarts=restarts: restarts() >= 1, timeout=5)
        what = "the owner's group actor" if name == OWNER else f"{name}'s connection to the owner"
        stage.checks.check(f"{what} restarted once (restarts={restarts()})", restarts() == 1)
    held, why = stage.wait_delivered(sent, stage.group_id)
    stage.checks.check(claim("messages told to them meanwhile waited and arrived once", why), held)


def client_killed(stage: Stage) -> None:
    last = stage.members[-1]
    heading(
        stage,
        f"{last}'s client, in a process of its own, is killed with SIGKILL while its message "
        "is on its way, and reopens from its file",
    )
    group_id = stage.group_id
    others = [name for name in stage.members if name != last]
    owner_member_id = stage.owner.group(group_id).member_id
    conns = stage.member_conns(last, group_id)
    to_owner = stage.conn_to_member(last, group_id, owner_member_id)
    stage.close_client(last)
    spec = {
        "db": f"sqlite:///{stage.workdir / last}.db",
        "servers": stage.servers_of(last),
        "name": last,
        "cut": [stage.servers.address("a")],  # the owner's server: its delivery waits
        "group_id": group_id,
        "text": f"{last}, killed on the way",
        "conns": conns,
        "held": to_owner,
    }
    with MemberProcess(spec) as child:
        report = child.report() or {}
        stage.checks.must(
            claim(
                f"{last}'s client closed here; its own Python process (pid {child.pid}) opened "
                f"{last}.db on the same servers",
                "" if report else f"no report from it: {child.stderr_tail() or 'nothing said'}",
            ),
            report.get("pid") == child.pid,
        )
        msg_id = report.get("msg_id", "")
        stored = until(lambda: all(msg_id in stage.received(n, group_id) for n in others))
        waits = bool(report.get("paused") and report.get("held") and msg_id)
        went = ""
        if others:
            went = f"the {counted(len(others), 'other member')} stored it (through server b), "
        stage.checks.must(
            claim(
                f"there, with server a cut off (its session paused), {last} wrote to the group: "
                f"{went}the delivery to the owner waits in its database "
                f"({report.get('pending', {}).get(to_owner)} pending)",
                "" if waits and stored else f"it said {report}, members stored it: {stored}",
            ),
            waits and stored,
        )
        running = child.running
        status = child.kill()
    stage.checks.check(
        f"SIGKILL sent to pid {child.pid}, still running with that delivery pending: the "
        f"process ended by the signal (exit status {status}), its client never closed",
        running and status == -signal.SIGKILL,
    )
    meanwhile = {OWNER: [stage.owner.send_group_message(group_id, f"while {last} is down")]}
    stage.open_client(last)
    mine = {last: [msg_id]}
    held, why = stage.wait_delivered(mine, group_id)
    stage.checks.check(
        claim(
            f"{last}'s client reopened in the demo's process from {last}.db: its message reached "
            "the owner once, and no member got it twice",
            why,
        ),
        held,
    )
    held, why = stage.wait_delivered(meanwhile, group_id)
    stage.checks.check(
        claim(
            f"{last} is back in the group: what the owner sent while it was down reached "
            f"everyone once, {last} included",
            why,
        ),
        held,
    )


def queue_rotates(stage: Stage) -> None:
    first = stage.members[0]
    heading(stage, f"The owner moves its queue for contact {first} to the other server")
    agent = stage.owner.agent
    at_owner, at_member = stage.contacts[first]
    conn_id = stage.contact_rows(OWNER)[first][1]
    info = agent.connection_info(conn_id)
    old = [stage.servers.name_of(s) for s in info.rcv_servers]
    target = next(n for n in SERVER_NAMES if n not in old)
    agent.switch_connection(conn_id, stage.servers.address(target))
    during = stage.owner.send_contact_message(at_owner, "sent while the queue moves")
    back = stage.clients[first].send_contact_message(at_member, "and back")

    def moved() -> bool:
        now = agent.connection_info(conn_id)
        return now.rcv_servers == [stage.servers.address(target)] and not now.rcv_switch_status

    stage.checks.check(
        f"connection_info: the owner receives from {first} on server {target} now "
        f"(was {', '.join(old)})",
        until(moved),
    )
    got = (
        stage.received(first, at_member).count(during),
        stage.received(OWNER, at_owner).count(back),
    )
    stage.checks.check(f"the messages sent during the move arrived once each {got}", got == (1, 1))
    after = stage.clients[first].send_contact_message(at_member, "after the move")
    stage.checks.check(
        "a message after the move arrives through the new queue",
        until(lambda: stage.received(OWNER, at_owner).count(after) == 1, WAIT),
    )


def tree_shows(stage: Stage) -> None:
    heading(stage, "The owner's supervision tree at the end")
    from actors.console import render_tree

    tree = stage.owner.tree()
    stage.console.print(render_tree(tree))
    node = tree.find(stage.crashed[0][1]) if stage.crashed else None
    stage.checks.check(
        "the tree shows the crashed group actor live again, restarts=1",
        node is not None and node.status == "live" and node.restarts == 1,
    )
    down = [n.address for n in tree.walk() if n.status not in ("live", "passivated")]
    stage.checks.check(f"every other actor is live {down or ''}".strip(), not down)


# The play, in order.
ACTS: tuple[Callable[[Stage], None], ...] = (
    servers_start,
    cast_opens,
    contacts_connect,
    group_forms,
    messages_flow,
    relay_group_forms,
    relay_messages_flow,
    relay_member_leaves,
    server_restarts,
    actors_crash,
    client_killed,
    queue_rotates,
    tree_shows,
)
