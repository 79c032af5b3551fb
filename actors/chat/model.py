"""The chat's typed contracts: owners, statuses, command functions and their agent calls.

An *owner* is the actor that owns a piece of chat state and the agent connections that
serve it: a contact, a contact address, or a group. Its name (`Owner`) is stored with every
chat command and every agent connection it owns, so an agent event finds its owner.

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


class GroupStatus(enum.StrEnum):
    INVITED = "invited"  # an invitation came; join_group to go on
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
