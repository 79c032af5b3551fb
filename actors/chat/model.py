"""The chat's typed contracts: owners, statuses, command functions and their agent calls.

An *owner* is the actor that owns a piece of chat state and the agent connections that
serve it: a contact, a contact address, a group, or (at a chat relay) a group it serves.
Its name (`Owner`) is stored with every chat command and every agent connection it owns, so
an agent event finds its owner.

A chat command (`ChatCommand` row) is an async agent command the chat issued: its function
says what continues it when the agent completes it, its `AgentCall` says exactly what was
asked, so the same call can be made again (idempotent by corr id) after any crash.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import msgspec


class OwnerKind(enum.StrEnum):
    CONTACT = "contact"
    ADDRESS = "address"
    GROUP = "group"
    RELAY_GROUP = "relay-group"  # at a chat relay: a group it serves, its roster's connections


class Owner(NamedTuple):
    kind: OwnerKind
    key: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.key}"

    @classmethod
    def parse(cls, text: str) -> Owner:
        kind, _, key = text.partition(":")
        return cls(OwnerKind(kind), key)


class ContactStatus(enum.StrEnum):
    INVITING = "inviting"  # our one-time invitation waits for the peer
    JOINING = "joining"  # we joined the peer's invitation
    ACCEPTING = "accepting"  # we accepted a request on our address
    ALLOWING = "allowing"  # we allowed the peer's confirmation; CON follows
    CONNECTED = "connected"
    FAILED = "failed"  # its connection failed for good


class AddressStatus(enum.StrEnum):
    CREATING = "creating"
    ACTIVE = "active"
    FAILED = "failed"


class GroupKind(enum.StrEnum):
    P2P = "p2p"  # every member connected to every other (group.py)
    RELAY = "relay"  # every member connected to the group's relays (relays.py)


class GroupStatus(enum.StrEnum):
    INVITED = "invited"  # an invitation came; join_group to go on
    PREPARED = "prepared"  # a relay group read from its link; connect_prepared_group to go on
    JOINED = "joined"  # a relay group: a relay took our join; what we send waits for one
    JOINING = "joining"  # we joined the host's link; waiting for the connection
    CONNECTED = "connected"  # connected to the host (and so a member)
    FAILED = "failed"  # the join failed for good
    LEFT = "left"  # we left it
    REMOVED = "removed"  # an owner or admin removed us
    DELETED = "deleted"  # its owner (we, or another) deleted it


# A group we are no longer in: nothing is sent to it, and a peer's message for it is refused.
ENDED_GROUPS = frozenset({GroupStatus.LEFT, GroupStatus.REMOVED, GroupStatus.DELETED})


class MemberStatus(enum.StrEnum):
    INVITED = "invited"  # the host invited it (host side)
    ACCEPTED = "accepted"  # it joined the host's link; the connection is being made
    ANNOUNCED = "announced"  # the host told us it joined; a forwarded invitation will come
    INTRODUCED = "introduced"  # the host introduced it to us (we are the new member)
    INTRO_INV = "intro-inv"  # we made the invitation for it and sent it to the host
    CONNECTING = "connecting"  # we joined its invitation (we are the existing member)
    CONNECTED = "connected"
    FAILED = "failed"  # its connection failed for good: never "connecting" forever
    LEFT = "left"  # it left (x.grp.leave)
    REMOVED = "removed"  # an owner or admin removed it (x.grp.mem.del)


# A member that left or was removed: it stays so, and nothing is sent to it or taken from it.
ENDED_MEMBERS = frozenset({MemberStatus.LEFT, MemberStatus.REMOVED})

# Statuses in which a connection waits for an agent event that is not a completion (CONF,
# CON, REQ): the agent tells such an event once, and again only when asked (Replay).
WAITING_MEMBERS = (
    MemberStatus.INVITED,  # the host waits for the invitee's CONF
    MemberStatus.ACCEPTED,  # the host allowed, or the invitee joined: CON
    MemberStatus.INTRO_INV,  # the new member waits for the existing one's CONF
    MemberStatus.CONNECTING,  # CON
)
WAITING_CONTACTS = (
    ContactStatus.INVITING,  # CONF
    ContactStatus.JOINING,  # CON, or CONF from an address
    ContactStatus.ACCEPTING,  # CON
    ContactStatus.ALLOWING,  # CON
)
WAITING_ADDRESSES = (AddressStatus.ACTIVE,)  # REQ


class RelayStatus(enum.StrEnum):
    """A relay of a relay group, at its owner and at a member (ChatGroupRelay)."""

    JOINING = "joining"  # our join of its address (owner) or relay link (member) is pending
    JOINED = "joined"  # the join was sent; its CONF (the relay accepted) comes next
    ALLOWING = "allowing"  # we allowed its CONF; the OK makes the connection
    CONNECTED = "connected"  # connected: a member sends to it; the owner waits for its acpt
    VERIFYING = "verifying"  # owner: its x.grp.relay.acpt came; reading its relay link
    ACTIVE = "active"  # owner: its relay link names the group; listed in the group link
    FAILED = "failed"  # its join failed for good, or its relay link did not verify
    REMOVED = "removed"  # the owner removed it from the group (its connection deleted)
    LEFT = "left"  # the group ended for us (we left, or it was deleted): connection deleted


# Relays whose connection is ready: a group message goes to them (else it waits for them).
RELAYS_CONNECTED = frozenset({RelayStatus.CONNECTED, RelayStatus.VERIFYING, RelayStatus.ACTIVE})
WAITING_RELAYS = (RelayStatus.JOINED,)  # CONF


class ServedStatus(enum.StrEnum):
    """At a chat relay: a group it serves (ChatRelayGroup)."""

    LINKING = "linking"  # its relay link (a contact address and its short link) is being made
    LINKED = "linked"  # the link is ready; x.grp.relay.acpt goes once the owner is connected
    ACTIVE = "active"  # the owner has the relay link: joiners come
    FAILED = "failed"  # the relay link could not be made
    DELETED = "deleted"  # its owner deleted it: every connection and the relay link deleted
    REMOVED = "removed"  # its owner removed us from it: the same


WAITING_SERVED = (ServedStatus.LINKED, ServedStatus.ACTIVE)  # REQ on the relay link
SERVED_ENDED = (ServedStatus.DELETED, ServedStatus.REMOVED)  # served no more


class RosterStatus(enum.StrEnum):
    """At a chat relay: a member (or the owner) of a group it serves (ChatRelayMember)."""

    ACCEPTING = "accepting"  # its request is being accepted
    ACCEPTED = "accepted"  # accepted; CON comes next
    CONNECTED = "connected"  # forwards go to it
    FAILED = "failed"
    LEFT = "left"  # it left (x.grp.leave), or the group was deleted: its connection deleted


WAITING_ROSTER = (RosterStatus.ACCEPTED,)  # CON
ROSTER_GONE = frozenset({RosterStatus.FAILED, RosterStatus.LEFT})  # nothing is forwarded to it


class IntroStatus(enum.StrEnum):
    """At the host: an introduction of a new member (to) to an existing one (re)."""

    INTRO_SENT = "intro-sent"  # x.grp.mem.intro went to the new member
    INV_RECEIVED = "inv-received"  # its invitation for the existing member came back
    FWD_SENT = "fwd-sent"  # forwarded to the existing member
    CONNECTED = "connected"  # one of them said x.grp.mem.con


class CommandFunction(enum.StrEnum):
    """What continues a chat command when the agent completes it (seed 0's names)."""

    CREATE_CONTACT_INV = "create_contact_inv"
    JOIN_CONTACT = "join_contact"
    ALLOW_CONTACT = "allow_contact"
    CREATE_ADDRESS = "create_address"
    ACCEPT_CONTACT = "accept_contact"
    JOIN_GROUP = "join_group"
    ALLOW_MEMBER = "allow_member"
    CREATE_INTRO_INV = "create_intro_inv"
    JOIN_INTRO = "join_intro"
    ALLOW_INTRO = "allow_intro"
    DELETE_MEMBER_CONN = "delete_member_conn"  # a group ended for us, or the member is gone
    # relay groups, at the owner and the members (relays.py)
    JOIN_RELAY = "join_relay"  # owner: the relay's address; member: a relay link
    ALLOW_RELAY = "allow_relay"  # the relay accepted (its CONF)
    VERIFY_RELAY_LINK = "verify_relay_link"  # owner: read a relay link's data
    CREATE_GROUP_LINK = "create_group_link"  # owner: the contact address behind the group link
    SET_GROUP_LINK = "set_group_link"  # owner: publish the group link's data
    DELETE_RELAY_CONN = "delete_relay_conn"  # a relay removed (owner), or the group ended
    DELETE_GROUP_LINK = "delete_group_link"  # owner: the group deleted, its link with it
    # at a chat relay (relay.py, roster.py)
    ACCEPT_RELAY_MEMBER = "accept_relay_member"  # the owner's or a joiner's request
    CREATE_RELAY_LINK = "create_relay_link"  # the contact address behind a relay link
    SET_RELAY_LINK = "set_relay_link"  # publish the relay link's data
    DELETE_SERVED_CONN = "delete_served_conn"  # a member left, or the group was deleted


class CommandStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class AgentCallKind(enum.StrEnum):
    CREATE = "create"
    CREATE_ADDRESS = "create_address"
    JOIN = "join"
    ALLOW = "allow"
    ACCEPT = "accept"
    DELETE = "delete"
    SET_LINK_DATA = "set_link_data"  # info: the user data
    GET_LINK_DATA = "get_link_data"  # link: the short link


# Calls that make their connection (the agent may not have it before the call is taken).
CREATING_CALLS = frozenset(
    {AgentCallKind.CREATE, AgentCallKind.CREATE_ADDRESS, AgentCallKind.JOIN, AgentCallKind.ACCEPT}
)


class AgentCall(msgspec.Struct, frozen=True):
    """One async agent command, as stored with the chat command that issued it."""

    kind: AgentCallKind
    link: str = ""  # join
    conf_id: str = ""  # allow
    inv_id: str = ""  # accept
    info: bytes = b""  # join, allow, accept
    member_id: str = ""  # the member it is for, in a group


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AgentCall)


def encode_call(call: AgentCall) -> bytes:
    return _encoder.encode(call)


def decode_call(data: bytes) -> AgentCall:
    return _decoder.decode(data)
