"""Chat messages: what one chat client says to another inside agent messages; pure, no I/O.

Owns the chat events carried as the body of a user message on an agent connection, or as the
`info` of a join or an allow: their JSON form, their version, their limits, and the shape of
the random ids they carry. Must not: do I/O, keep state, import anything of duplex but
`protocol.errors`, parse links (a link is a bounded ``duplex:/…`` string here; the caller
parses it with `protocol.links`), or judge whether a message makes sense where it arrived (a
group the sender is not in, a forged member id, an intro for a member already known): that
takes the chat actors' state.

Wire form
---------
JSON, so that a person reading a capture, a log or a stored body can follow it::

    {"v":1,"event":"x.grp.mem.con","params":{"member_id":"q2V4bUq1i8Wf0Tn3"}}

`v` is the chat protocol's version (`CHAT_VERSION`), `event` names the message (the `event` of
its struct), `params` holds its fields as an object (``{}`` when it has none). A reader checks
the version before it looks at anything else and refuses one it does not speak, with a message
saying so. Readers ignore fields they do not know, so a later revision may add an optional
field without a new version; changing or removing a field takes a new version.

Ids
---
`member_id`, `group_id`, `msg_id` and `author_id` are 16 base64url characters: 12 random
bytes, made by `new_member_id`, `new_group_id` and `new_message_id`. A member id names a member
within a group for everyone in it; a message id names one group (or direct) message for every
copy of it, so that a receiver drops the copies it already has. Readers check their shape, not
who they belong to.

Messages
--------
Each event's struct is its name in camel case (``x.grp.mem.intro`` is `XGrpMemIntro`).

Contacts, on the contact's connection::

    event      from → to     carried as               when
    x.info     each side     join or allow info       connecting: the sender's profile
    x.msg.new  either        user message             a direct message

Joining a group by invitation: host H adds invitee I; M is each existing member.
H-I is the member connection between H and I that the join creates, M-I the one that the
introduction creates; a connection "as msg" carries the event as a user message::

    step event            from → to          on, as                 in answer to
    1    x.grp.inv        H → I              H's contact conn, msg  H's add_member
    2    x.grp.acpt       I → H              H-I, join info         I's join_group (over 1's link)
    3    x.grp.mem.new    H → each M         H-M, msg               CON of H-I
    4    x.grp.mem.intro  H → I, one per M   H-I, msg               CON of H-I
    5    x.grp.mem.inv    I → H, one per M   H-I, msg               the intro of M, once I has
                                                                    created M-I (its INV)
    6    x.grp.mem.fwd    H → M              H-M, msg               5 naming M (sent once M is
                                                                    connected to H)
    7    x.grp.mem.info   M → I              M-I, join info         6 (over its link)
    8    x.grp.mem.info   I → M              M-I, allow info        the CONF that carried 7
    9    x.grp.mem.con    I → H and M → H    H-I and H-M, msg       CON of M-I

In step 1 `link` is the invitation H created for I; in step 5 the invitation I created for M,
which H passes on unchanged in step 6. The member ids of steps 2-9 are those H gave out in
steps 1 and 3-4; the chat checks them against what it stored.

A group's life, on member connections, as user messages::

    event          from → to                              when
    x.msg.new      a member → every connected member      a group message
    x.grp.msg.fwd  H → a member not yet connected to      a group message of `author_id`,
                   `author_id`                            unchanged
    x.grp.mem.del  an owner or admin → every member       removes `member_id`
    x.grp.leave    a member → every member                it leaves
    x.grp.del      an owner → every member                the group is deleted

Relay groups: owner O, relays R (each a chat relay with a contact address), joiner J. O
publishes a *group link* (a short link whose user data is `GroupLinkData`: the group, the
owner, the relay links); each relay publishes one *relay link* per group it serves (a short
link whose user data is `RelayLinkData`: the group id). Nobody joins the group link: joiners
read it and join the relay links::

    event             from → to     on, as                             when
    x.grp.relay.inv   O → R         join info of O's join of R's        create_relay_group
                                    contact address
    x.grp.relay.acpt  R → O         O-R, msg                            R's relay link is made
                                                                        and O-R is connected
    x.grp.mem.info    J → R         join info of J's join of R's        connect_prepared_group
                                    relay link (J's member info)
    x.msg.new         O or J → R    O-R or J-R, msg                     a group message, sent
                                                                        to every relay
    x.grp.msg.fwd     R → the       their connection, msg               R forwards what a
                      others                                            member sent it
    x.grp.leave       O or J → R    O-R or J-R, msg                     it leaves: R forwards
                                                                        nothing more to it
    x.grp.del         O → R         O-R, msg                            O deletes the group
    x.grp.del.fwd     R → the       their connection, msg               R passes O's x.grp.del
                      others                                            on, and serves the
                                                                        group no more
    x.grp.relay.rem   O → R, then   O-R, then their connection, msg     O removed R: R serves
                      R → the                                           the group no more, and
                      others                                            members drop it

Each relay forwards a member's message unchanged (the author's member id and the shared
message id), so that a receiver drops the copies the other relays bring.

Limits
------
An encoded message is at most `MAX_CHAT_MESSAGE` (15 KiB) bytes, which fits an agent user
message (`protocol.envelope.MAX_USER_BODY`); a reader refuses a larger one before parsing it.
Every string and every field is bounded so that any message built within the field limits
encodes within that size: a text is at most `MAX_TEXT` bytes as a JSON string (so that the
host can always wrap it in `x.grp.msg.fwd`), and the messages carried as join or allow info
(`XInfo`, `XGrpAcpt`, `XGrpMemInfo`, `XGrpRelayInv`) stay far below the agent's `MAX_INFO`
(8 KiB). A group link's data lists at most `MAX_RELAYS` relay links of at most
`MAX_SHORT_LINK` characters, and the whole encodes within `MAX_LINK_USER_DATA` (checked as a
whole: a long multi-byte description could pass it), so that it fits in a short link's data.
Names are one line: no control characters, not blank. Texts and descriptions may hold tabs and
line breaks but no other control characters (nor NUL, which PostgreSQL cannot store).

Bad input
---------
`decode_chat_message` (and `decode_link_data`, for the user data of a short link) returns a
valid message or raises `ChatWireError`, whatever the bytes:
not JSON, not UTF-8, an unknown event, another version, a wrong type, a bad id, a string or a
message too long. Never another exception. `encode_chat_message` checks what it produces with
the reader's own rules, so nothing this module sends is refused by a peer running it.
"""

from __future__ import annotations

import base64
import enum
import secrets
from typing import Annotated, Any, ClassVar, Final

import msgspec

from protocol.errors import ChatWireError

__all__ = [
    "CHAT_VERSION",
    "ID_BYTES",
    "ID_LENGTH",
    "MAX_CHAT_MESSAGE",
    "MAX_DESCRIPTION",
    "MAX_DISPLAY_NAME",
    "MAX_FULL_NAME",
    "MAX_GROUP_NAME",
    "MAX_LINK",
    "MAX_LINK_USER_DATA",
    "MAX_RELAYS",
    "MAX_SHORT_LINK",
    "MAX_TEXT",
    "ChatMessage",
    "ChatWireError",
    "GroupLinkData",
    "GroupProfile",
    "GroupRole",
    "MemberInfo",
    "Profile",
    "RelayLinkData",
    "XGrpAcpt",
    "XGrpDel",
    "XGrpDelFwd",
    "XGrpInv",
    "XGrpLeave",
    "XGrpMemCon",
    "XGrpMemDel",
    "XGrpMemFwd",
    "XGrpMemInfo",
    "XGrpMemIntro",
    "XGrpMemInv",
    "XGrpMemNew",
    "XGrpMsgFwd",
    "XGrpRelayAcpt",
    "XGrpRelayInv",
    "XGrpRelayRem",
    "XInfo",
    "XMsgNew",
    "decode_chat_message",
    "decode_link_data",
    "encode_chat_message",
    "encode_link_data",
    "new_group_id",
    "new_member_id",
    "new_message_id",
]

CHAT_VERSION: Final = 1
MAX_CHAT_MESSAGE: Final = 15 * 1024  # bytes of an encoded message
MAX_DISPLAY_NAME: Final = 100  # characters
MAX_FULL_NAME: Final = 200
MAX_GROUP_NAME: Final = 100
MAX_DESCRIPTION: Final = 2000
MAX_TEXT: Final = 14 * 1024  # bytes of the text as a JSON string, quotes and escapes included
MAX_LINK: Final = 4 * 1024  # characters, as protocol.links.MAX_LINK_TEXT
MAX_SHORT_LINK: Final = 512  # characters of a relay link (a short link is ~200)
MAX_RELAYS: Final = 8  # relay links in a group link
MAX_LINK_USER_DATA: Final = 4 * 1024  # bytes of encoded link data (the agent's blob is 8 KiB)
ID_BYTES: Final = 12
ID_LENGTH: Final = 16  # base64url characters of ID_BYTES, no padding needed
_MAX_EVENT: Final = 32

# Patterns end in \Z, not $: "$" would also match before a final newline. Names exclude the C0
# and C1 controls and DEL, and must hold something other than white space (the lookahead keeps
# the check linear); multi-line strings allow tab, LF and CR. A link is a URI of our scheme.
_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{16}\Z"
_NAME_PATTERN: Final = r"^(?!\s*\Z)[^\x00-\x1f\x7f-\x9f]*\Z"
_LINE_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*\Z"
_MULTILINE_PATTERN: Final = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*\Z"
_LINK_PATTERN: Final = r"^duplex:/[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+\Z"

ChatId = Annotated[
    str, msgspec.Meta(min_length=ID_LENGTH, max_length=ID_LENGTH, pattern=_ID_PATTERN)
]
MemberId = ChatId
GroupId = ChatId
MessageId = ChatId
Link = Annotated[str, msgspec.Meta(max_length=MAX_LINK, pattern=_LINK_PATTERN)]
ShortLink = Annotated[str, msgspec.Meta(max_length=MAX_SHORT_LINK, pattern=_LINK_PATTERN)]
DisplayName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_DISPLAY_NAME, pattern=_NAME_PATTERN)
]
FullName = Annotated[str, msgspec.Meta(max_length=MAX_FULL_NAME, pattern=_LINE_PATTERN)]
GroupName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_GROUP_NAME, pattern=_NAME_PATTERN)
]
Description = Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION, pattern=_MULTILINE_PATTERN)]
# Characters, a first cheap bound; XMsgNew checks the exact one (bytes as JSON) itself.
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT, pattern=_MULTILINE_PATTERN)]

_STRUCT: Final = {"frozen": True}


# ---------------------------------------------------------------------- ids


def _new_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(ID_BYTES)).decode("ascii")


def new_member_id() -> str:
    """A fresh member id: 16 base64url characters of 12 random bytes."""
    return _new_id()


def new_group_id() -> str:
    """A fresh group id, shared by every member of the group: as `new_member_id`."""
    return _new_id()


def new_message_id() -> str:
    """A fresh shared message id, the same on every copy of one message: as `new_member_id`."""
    return _new_id()


# ---------------------------------------------------------------------- values


class GroupRole(enum.Enum):
    """A member's role; owner > admin > member > observer (`level`, `at_least`).

    A plain Enum, not a str one, so that roles are never compared as strings by accident.
    """

    OBSERVER = "observer"
    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def level(self) -> int:
        """0 for an observer up to 3 for an owner."""
        return _ROLE_LEVELS[self]

    def at_least(self, other: GroupRole) -> bool:
        """Whether this role is `other` or above it."""
        return self.level >= other.level


_ROLE_LEVELS: Final = {role: level for level, role in enumerate(GroupRole)}


class Profile(msgspec.Struct, **_STRUCT):
    """How a user shows itself to a contact or a group: a one-line, non-blank display name and
    an optional full name."""

    display_name: DisplayName
    full_name: FullName = ""


class GroupProfile(msgspec.Struct, **_STRUCT):
    """A group's name (one line, non-blank) and an optional multi-line description."""

    name: GroupName
    description: Description = ""


class MemberInfo(msgspec.Struct, **_STRUCT):
    """A member as the group knows it: its id in the group, its role and its profile."""

    member_id: MemberId
    role: GroupRole
    profile: Profile


# ---------------------------------------------------------------------- messages


class XInfo(msgspec.Struct, **_STRUCT):
    """The sender's profile, as the join or allow info of a contact connection."""

    event: ClassVar[str] = "x.info"
    profile: Profile


class XMsgNew(msgspec.Struct, **_STRUCT):
    """A direct or group message: `msg_id` is shared by every copy of it (receivers drop
    copies they already have); `text` is at most `MAX_TEXT` bytes as a JSON string."""

    event: ClassVar[str] = "x.msg.new"
    msg_id: MessageId
    text: Text

    def __post_init__(self) -> None:
        if isinstance(self.text, str):
            try:
                size = len(_encoder.encode(self.text))
            except UnicodeEncodeError:  # a lone surrogate: not text any peer could read
                raise ChatWireError("a message text is not valid Unicode") from None
            if size > MAX_TEXT:
                raise ChatWireError(
                    f"a message text of {size} bytes as JSON; the limit is {MAX_TEXT}"
                )


class XGrpInv(msgspec.Struct, **_STRUCT):
    """Host → invitee, on their contact connection: "join group `group_id` over `link`".

    `host` is the sender as a member; `invitee_id` and `invitee_role` are what the invitee
    will be in the group; `link` is the invitation the host created for this invitee.
    """

    event: ClassVar[str] = "x.grp.inv"
    group_id: GroupId
    group: GroupProfile
    host: MemberInfo
    invitee_id: MemberId
    invitee_role: GroupRole
    link: Link

    def __post_init__(self) -> None:
        if isinstance(self.host, MemberInfo) and self.host.member_id == self.invitee_id:
            raise ChatWireError("an invitation's host and invitee have the same member id")


class XGrpAcpt(msgspec.Struct, **_STRUCT):
    """Invitee → host, as the join info on the host's link: "I accept, as `member_id`"."""

    event: ClassVar[str] = "x.grp.acpt"
    member_id: MemberId
    profile: Profile


class XGrpMemNew(msgspec.Struct, **_STRUCT):
    """Host → every existing member: `member` has joined."""

    event: ClassVar[str] = "x.grp.mem.new"
    member: MemberInfo


class XGrpMemIntro(msgspec.Struct, **_STRUCT):
    """Host → the new member, one per existing member: "connect to `member`"."""

    event: ClassVar[str] = "x.grp.mem.intro"
    member: MemberInfo


class XGrpMemInv(msgspec.Struct, **_STRUCT):
    """New member → host, in answer to the intro of `member_id`: the invitation it created
    for that member."""

    event: ClassVar[str] = "x.grp.mem.inv"
    member_id: MemberId
    link: Link


class XGrpMemFwd(msgspec.Struct, **_STRUCT):
    """Host → an existing member: "`member` (the new one) invites you over `link`"."""

    event: ClassVar[str] = "x.grp.mem.fwd"
    member: MemberInfo
    link: Link


class XGrpMemInfo(msgspec.Struct, **_STRUCT):
    """The join (existing member) or allow (new member) info of a member-to-member
    connection: who the sender is, in which group."""

    event: ClassVar[str] = "x.grp.mem.info"
    group_id: GroupId
    member: MemberInfo


class XGrpMemCon(msgspec.Struct, **_STRUCT):
    """Member → host (its introducer): "I am now connected to `member_id`"."""

    event: ClassVar[str] = "x.grp.mem.con"
    member_id: MemberId


class XGrpMemDel(msgspec.Struct, **_STRUCT):
    """An owner or admin → every member: `member_id` is removed from the group."""

    event: ClassVar[str] = "x.grp.mem.del"
    member_id: MemberId


class XGrpLeave(msgspec.Struct, **_STRUCT):
    """A member → every member: the sender leaves the group."""

    event: ClassVar[str] = "x.grp.leave"


class XGrpDel(msgspec.Struct, **_STRUCT):
    """An owner → every member: the group is deleted."""

    event: ClassVar[str] = "x.grp.del"


class XGrpDelFwd(msgspec.Struct, **_STRUCT):
    """A chat relay → every member it serves: the group's owner `author_id` deleted the
    group (its x.grp.del, passed on); the relay serves it no more."""

    event: ClassVar[str] = "x.grp.del.fwd"
    author_id: MemberId


class XGrpRelayRem(msgspec.Struct, **_STRUCT):
    """The owner → a relay it removed, and that relay → every member it serves: the relay
    serves the group no more (a member drops it and keeps the group's other relays)."""

    event: ClassVar[str] = "x.grp.relay.rem"


class XGrpMsgFwd(msgspec.Struct, **_STRUCT):
    """Host → a member not yet connected to `author_id`: that member's group `message`,
    unchanged (same shared id, so a later direct copy is dropped as a duplicate)."""

    event: ClassVar[str] = "x.grp.msg.fwd"
    author_id: MemberId
    message: XMsgNew


class XGrpRelayInv(msgspec.Struct, **_STRUCT):
    """Owner → relay, as the join info of the owner's join of the relay's contact address:
    "serve group `group_id` (named `group_name`), owned by `owner`". The name, not the whole
    profile: join info is at most the agent's MAX_INFO, which a long description would pass,
    and a relay has no use for the description."""

    event: ClassVar[str] = "x.grp.relay.inv"
    group_id: GroupId
    group_name: GroupName
    owner: MemberInfo


class XGrpRelayAcpt(msgspec.Struct, **_STRUCT):
    """Relay → owner, on their connection: "I serve `group_id`; joiners join `relay_link`"
    (the short link of a contact address the relay made for this group)."""

    event: ClassVar[str] = "x.grp.relay.acpt"
    group_id: GroupId
    relay_link: ShortLink


ChatMessage = (
    XInfo
    | XMsgNew
    | XGrpInv
    | XGrpAcpt
    | XGrpMemNew
    | XGrpMemIntro
    | XGrpMemInv
    | XGrpMemFwd
    | XGrpMemInfo
    | XGrpMemCon
    | XGrpMemDel
    | XGrpLeave
    | XGrpDel
    | XGrpDelFwd
    | XGrpMsgFwd
    | XGrpRelayInv
    | XGrpRelayAcpt
    | XGrpRelayRem
)
_MESSAGE_TYPES: Final = ChatMessage.__args__


# ---------------------------------------------------------------------- short links' data


class GroupLinkData(msgspec.Struct, **_STRUCT):
    """The user data of a relay group's link: the group, its owner, and the relay links a
    joiner joins (at least one: a link is published once a relay is verified)."""

    event: ClassVar[str] = "x.grp.link"
    group_id: GroupId
    group: GroupProfile
    owner: MemberInfo
    relays: Annotated[list[ShortLink], msgspec.Meta(min_length=1, max_length=MAX_RELAYS)]

    def __post_init__(self) -> None:
        if isinstance(self.relays, list) and len(set(self.relays)) != len(self.relays):
            raise ChatWireError("a group link lists a relay link twice")


class RelayLinkData(msgspec.Struct, **_STRUCT):
    """The user data of a relay link: the group it lets a joiner into."""

    event: ClassVar[str] = "x.grp.relay.link"
    group_id: GroupId


LinkUserData = GroupLinkData | RelayLinkData
_LINK_DATA_TYPES: Final = LinkUserData.__args__


class _Frame(msgspec.Struct, **_STRUCT):
    """A chat message on the wire: ``{"v": version, "event": name, "params": {fields}}``."""

    v: int
    event: Annotated[str, msgspec.Meta(max_length=_MAX_EVENT)]
    params: msgspec.Raw


# msgspec raises these besides DecodeError (ValidationError is one, and so are the TypeError
# and ValueError of a __post_init__): UnicodeDecodeError for bytes that are not UTF-8,
# RecursionError for arrays or objects nested past its depth limit (even in ignored fields).
# ChatWireError from a __post_init__ passes through as it is.
_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_REASON_LENGTH: Final = 200  # msgspec may quote the offending value: keep messages short

_encoder = msgspec.json.Encoder()
_frame_decoder = msgspec.json.Decoder(_Frame)
_decoders: Final = {cls.event: msgspec.json.Decoder(cls) for cls in _MESSAGE_TYPES}
_link_decoders: Final = {cls.event: msgspec.json.Decoder(cls) for cls in _LINK_DATA_TYPES}


# ---------------------------------------------------------------------- encode, decode


def encode_chat_message(message: ChatMessage) -> bytes:
    """The JSON bytes of `message`, at most `MAX_CHAT_MESSAGE`, checked as a receiver would
    check them: `ChatWireError` if any field is of the wrong type, shape or size, or if the
    message read back from them is not `message` (a field of another type that happens to
    encode the same, such as a dict for a `Profile`)."""
    if not isinstance(message, _MESSAGE_TYPES):
        raise ChatWireError(f"not a chat message: {type(message).__name__}")
    try:
        params = _encoder.encode(message)
        data = _encoder.encode(_Frame(CHAT_VERSION, message.event, msgspec.Raw(params)))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ChatWireError(f"{message.event} does not encode: {_reason(exc)}") from None
    try:
        decoded = decode_chat_message(data)  # the receiver's checks: types, ids, lengths, size
    except ChatWireError as exc:
        raise ChatWireError(f"{message.event} would be refused: {exc.args[0]}") from None
    if decoded != message:  # e.g. a dict for a Profile, a str for a GroupRole: same JSON
        raise ChatWireError(f"{message.event} holds a field not of its declared type")
    return data


def decode_chat_message(data: bytes) -> ChatMessage:
    """The chat message in `data`; `ChatWireError` (and nothing else) if there is none: bytes
    above `MAX_CHAT_MESSAGE`, not JSON, another version, an unknown event, a bad field."""
    return _decode(data, _decoders, MAX_CHAT_MESSAGE, "a chat message")


def encode_link_data(data: LinkUserData) -> bytes:
    """The JSON bytes of a short link's user data (same frame as a chat message), at most
    `MAX_LINK_USER_DATA`, checked as a reader would check them (`ChatWireError`)."""
    if not isinstance(data, _LINK_DATA_TYPES):
        raise ChatWireError(f"not link data: {type(data).__name__}")
    try:
        params = _encoder.encode(data)
        encoded = _encoder.encode(_Frame(CHAT_VERSION, data.event, msgspec.Raw(params)))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ChatWireError(f"{data.event} does not encode: {_reason(exc)}") from None
    try:
        decoded = decode_link_data(encoded)
    except ChatWireError as exc:
        raise ChatWireError(f"{data.event} would be refused: {exc.args[0]}") from None
    if decoded != data:
        raise ChatWireError(f"{data.event} holds a field not of its declared type")
    return encoded


def decode_link_data(data: bytes) -> LinkUserData:
    """The link data in `data` (a short link's user data); `ChatWireError` and nothing else
    if there is none, as `decode_chat_message`."""
    return _decode(data, _link_decoders, MAX_LINK_USER_DATA, "link data")


def _decode(data: bytes, decoders: dict[str, Any], limit: int, what: str) -> Any:
    if not isinstance(data, bytes):
        raise ChatWireError(f"{what} is bytes, not {type(data).__name__}")
    if len(data) > limit:
        raise ChatWireError(f"{what} of {len(data)} bytes; the limit is {limit}")
    try:
        frame = _frame_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise ChatWireError(f"malformed chat message: {_reason(exc)}") from None
    if frame.v != CHAT_VERSION:
        raise ChatWireError(
            f"a chat message of version {frame.v}; this client reads version {CHAT_VERSION}"
        )
    decoder = decoders.get(frame.event)
    if decoder is None:
        raise ChatWireError(f"unknown chat event {frame.event!r}")
    try:
        return decoder.decode(frame.params)
    except _DECODE_ERRORS as exc:
        raise ChatWireError(f"malformed {frame.event}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= _REASON_LENGTH else text[:_REASON_LENGTH] + "…"
