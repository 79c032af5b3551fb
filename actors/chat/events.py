"""What the chat tells the program above it (a bot, a test, a UI): typed events.

Every id in an event is stable across restarts (it is stored before it is told). Events are
stored with the state they describe and told once it is committed; after a crash an event
may be told again, never lost for what was committed.

    CONTACT_LINK        our one-time invitation for a new contact is ready: share `link`
    ADDRESS_LINK        a contact address is ready: share `link`
    CONTACT_REQUEST     someone knocked on an address without auto-accept
    CONTACT_CONNECTED   a contact is connected both ways (with its profile)
    CONTACT_FAILED      a contact's connection failed for good
    NEW_MESSAGE         a message in a contact or group chat (exactly once per shared id)
    GROUP_INVITATION    a contact invites us to a group: `join_group` to accept
    GROUP_CONNECTED     we are connected to the group's host: a member now
    MEMBER_CONNECTED    a member of a group is connected to us
    MEMBER_FAILED       a member's connection failed for good
    GROUP_FAILED        our join of a group failed for good
    MEMBER_LEFT         a member left a group (its connection is deleted)
    MEMBER_REMOVED      an owner or admin removed a member (its connection is deleted)
    GROUP_REMOVED       an owner or admin removed us from a group (our connections are deleted)
    GROUP_DELETED       the group's owner deleted it (our connections are deleted)
    GROUP_LINK_READY    a relay group we own published its group link (again, each time
                        the list of verified relays behind it grew): share `link`
    GROUP_JOINED        a relay group: a relay took our join; what we send from now on is
                        delivered once a relay connection is up (GROUP_CONNECTED follows at
                        the first relay connected)
    GROUP_JOIN_FAILED   a relay group: our join failed for good at every relay

What we do ourselves (leave, remove, delete) is not told: the call returns once it is stored.
"""

from __future__ import annotations

import msgspec

_EVENT = {"frozen": True, "tag_field": "event"}


class ContactLink(msgspec.Struct, tag="CONTACT_LINK", **_EVENT):
    contact_id: str
    link: str


class AddressLink(msgspec.Struct, tag="ADDRESS_LINK", **_EVENT):
    address_id: str
    link: str


class ContactRequest(msgspec.Struct, tag="CONTACT_REQUEST", **_EVENT):
    address_id: str
    request_id: str
    display_name: str


class ContactConnected(msgspec.Struct, tag="CONTACT_CONNECTED", **_EVENT):
    contact_id: str
    display_name: str


class ContactFailed(msgspec.Struct, tag="CONTACT_FAILED", **_EVENT):
    contact_id: str
    code: str


class NewMessage(msgspec.Struct, tag="NEW_MESSAGE", **_EVENT):
    chat_kind: str  # "contact" | "group"
    chat_id: str
    msg_id: str
    author: str  # a contact id, or a member id in a group
    text: str


class GroupInvitation(msgspec.Struct, tag="GROUP_INVITATION", **_EVENT):
    group_id: str
    contact_id: str
    name: str
    host: str  # the host's display name


class GroupConnected(msgspec.Struct, tag="GROUP_CONNECTED", **_EVENT):
    group_id: str


class MemberConnected(msgspec.Struct, tag="MEMBER_CONNECTED", **_EVENT):
    group_id: str
    member_id: str
    display_name: str


class MemberFailed(msgspec.Struct, tag="MEMBER_FAILED", **_EVENT):
    group_id: str
    member_id: str
    code: str


class GroupFailed(msgspec.Struct, tag="GROUP_FAILED", **_EVENT):
    group_id: str
    code: str


class MemberLeft(msgspec.Struct, tag="MEMBER_LEFT", **_EVENT):
    group_id: str
    member_id: str


class MemberRemoved(msgspec.Struct, tag="MEMBER_REMOVED", **_EVENT):
    group_id: str
    member_id: str
    by_member_id: str  # the owner or admin that removed it


class GroupRemoved(msgspec.Struct, tag="GROUP_REMOVED", **_EVENT):
    """We were removed from the group."""

    group_id: str
    by_member_id: str


class GroupDeleted(msgspec.Struct, tag="GROUP_DELETED", **_EVENT):
    group_id: str
    by_member_id: str  # its owner


class GroupLinkReady(msgspec.Struct, tag="GROUP_LINK_READY", **_EVENT):
    group_id: str
    link: str
    relays: int  # the relay links it lists


class GroupJoined(msgspec.Struct, tag="GROUP_JOINED", **_EVENT):
    group_id: str


class GroupJoinFailed(msgspec.Struct, tag="GROUP_JOIN_FAILED", **_EVENT):
    group_id: str
    code: str  # the last relay's


ChatEvent = (
    ContactLink
    | AddressLink
    | ContactRequest
    | ContactConnected
    | ContactFailed
    | NewMessage
    | GroupInvitation
    | GroupConnected
    | MemberConnected
    | MemberFailed
    | GroupFailed
    | MemberLeft
    | MemberRemoved
    | GroupRemoved
    | GroupDeleted
    | GroupLinkReady
    | GroupJoined
    | GroupJoinFailed
)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ChatEvent)


def encode_event(event: ChatEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> ChatEvent:
    return _decoder.decode(data)
