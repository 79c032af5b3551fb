"""Tests of protocol.chat: round trips of every chat message, the wire form, the limits, the
ids, and bad input (hypothesis: only ChatWireError, whatever the bytes)."""

from __future__ import annotations

import ast
import base64
import copy
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol.chat
from protocol import envelope, links
from protocol.address import ServerAddress
from protocol.chat import (
    CHAT_VERSION,
    ID_BYTES,
    ID_LENGTH,
    MAX_CHAT_MESSAGE,
    MAX_DESCRIPTION,
    MAX_DISPLAY_NAME,
    MAX_FULL_NAME,
    MAX_GROUP_NAME,
    MAX_LINK,
    MAX_LINK_USER_DATA,
    MAX_RELAYS,
    MAX_SHORT_LINK,
    MAX_TEXT,
    ChatMessage,
    GroupLinkData,
    GroupProfile,
    GroupRole,
    MemberInfo,
    Profile,
    RelayLinkData,
    XGrpAcpt,
    XGrpDel,
    XGrpDelFwd,
    XGrpInv,
    XGrpLeave,
    XGrpMemCon,
    XGrpMemDel,
    XGrpMemFwd,
    XGrpMemInfo,
    XGrpMemIntro,
    XGrpMemInv,
    XGrpMemNew,
    XGrpMsgFwd,
    XGrpRelayAcpt,
    XGrpRelayInv,
    XGrpRelayRem,
    XInfo,
    XMsgNew,
    decode_chat_message,
    decode_link_data,
    encode_chat_message,
    encode_link_data,
    new_group_id,
    new_member_id,
    new_message_id,
)
from protocol.crypto import DhKey, random_bytes
from protocol.errors import ChatWireError, DuplexError
from protocol.queue import MAX_LINK_DATA, QueueMode


def fast(examples: int) -> settings:
    """Hypothesis settings for these tests: `examples` inputs, no deadline (CI is noisy)."""
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


SERVER = ServerAddress(bytes(range(32)), "relay.example.org", 5223)
INVITATION = links.ConnectionLink.create(
    links.QueueAddress.create(
        SERVER, random_bytes(24), DhKey.generate().public, QueueMode.MESSAGING
    )
).to_uri()
SHORT = links.ShortLink.generate(SERVER).to_uri()

GROUP = "groupgroupgroup1"
HOST = MemberInfo("hosthosthosthost", GroupRole.OWNER, Profile("Hélène", "Hélène Host"))
INVITEE = MemberInfo("invitee_invitee1", GroupRole.MEMBER, Profile("Ivan"))
MEMBER = MemberInfo("member-member-m1", GroupRole.ADMIN, Profile("Mia 🙂", 'Mia "M" Doe'))
MESSAGE = XMsgNew("messagemessage-1", 'hello,\n\tworld "quoted" \\ 🙂')

SAMPLES: dict[str, ChatMessage] = {
    "x.info": XInfo(Profile("Alice", "Alice Liddell")),
    "x.msg.new": MESSAGE,
    "x.grp.inv": XGrpInv(
        GROUP,
        GroupProfile("Readers", "books\nand more"),
        HOST,
        INVITEE.member_id,
        GroupRole.MEMBER,
        INVITATION,
    ),
    "x.grp.acpt": XGrpAcpt(INVITEE.member_id, INVITEE.profile),
    "x.grp.mem.new": XGrpMemNew(INVITEE),
    "x.grp.mem.intro": XGrpMemIntro(MEMBER),
    "x.grp.mem.inv": XGrpMemInv(MEMBER.member_id, INVITATION),
    "x.grp.mem.fwd": XGrpMemFwd(INVITEE, INVITATION),
    "x.grp.mem.info": XGrpMemInfo(GROUP, MEMBER),
    "x.grp.mem.con": XGrpMemCon(MEMBER.member_id),
    "x.grp.mem.del": XGrpMemDel(MEMBER.member_id),
    "x.grp.leave": XGrpLeave(),
    "x.grp.del": XGrpDel(),
    "x.grp.del.fwd": XGrpDelFwd(MEMBER.member_id),
    "x.grp.msg.fwd": XGrpMsgFwd(MEMBER.member_id, MESSAGE),
    "x.grp.relay.inv": XGrpRelayInv(GROUP, "Readers", HOST),
    "x.grp.relay.acpt": XGrpRelayAcpt(GROUP, SHORT),
    "x.grp.relay.rem": XGrpRelayRem(),
}
ENCODED = {event: encode_chat_message(message) for event, message in SAMPLES.items()}
TREES = {event: json.loads(data) for event, data in ENCODED.items()}

# Every id field of every message, as a path into its JSON form.
ID_PATHS = [
    ("x.msg.new", ("params", "msg_id")),
    ("x.grp.inv", ("params", "group_id")),
    ("x.grp.inv", ("params", "host", "member_id")),
    ("x.grp.inv", ("params", "invitee_id")),
    ("x.grp.acpt", ("params", "member_id")),
    ("x.grp.mem.new", ("params", "member", "member_id")),
    ("x.grp.mem.intro", ("params", "member", "member_id")),
    ("x.grp.mem.inv", ("params", "member_id")),
    ("x.grp.mem.fwd", ("params", "member", "member_id")),
    ("x.grp.mem.info", ("params", "group_id")),
    ("x.grp.mem.info", ("params", "member", "member_id")),
    ("x.grp.mem.con", ("params", "member_id")),
    ("x.grp.mem.del", ("params", "member_id")),
    ("x.grp.del.fwd", ("params", "author_id")),
    ("x.grp.msg.fwd", ("params", "author_id")),
    ("x.grp.msg.fwd", ("params", "message", "msg_id")),
    ("x.grp.relay.inv", ("params", "group_id")),
    ("x.grp.relay.inv", ("params", "owner", "member_id")),
    ("x.grp.relay.acpt", ("params", "group_id")),
]
BAD_IDS: list[object] = [
    "",
    "A" * (ID_LENGTH - 1),
    "A" * (ID_LENGTH + 1),
    "A" * 15 + "+",  # base64, not base64url
    "A" * 15 + "/",
    "A" * 14 + "==",  # padding
    "A" * 15 + "\n",
    "A" * 16 + "\n",  # a final newline, which "$" would let through
    " " + "A" * 15,
    "A" * 15 + "é",
    "A" * 15 + "\u0410",  # Cyrillic A
    "A" * 15 + "\x00",
    123,
    None,
    True,
    ["A" * 16],
    {"id": "A" * 16},
]


def paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path below `tree` (a JSON value), parents before children."""
    found: list[tuple[Any, ...]] = []
    if isinstance(tree, dict):
        items = list(tree.items())
    elif isinstance(tree, list):
        items = list(enumerate(tree))
    else:
        items = []
    for key, value in items:
        found.append((*prefix, key))
        found.extend(paths(value, (*prefix, key)))
    return found


def get(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _copied_along(tree: Any, path: tuple[Any, ...]) -> tuple[Any, Any]:
    """A copy of `tree` whose containers along `path` are new, and the new parent of its end;
    the rest is shared (cheaper than a deep copy, and the trees here are only read)."""
    root = parent = copy.copy(tree)
    for key in path[:-1]:
        parent[key] = copy.copy(parent[key])
        parent = parent[key]
    return root, parent


def replaced(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    root, parent = _copied_along(tree, path)
    parent[path[-1]] = value
    return root


def deleted(tree: Any, path: tuple[Any, ...]) -> Any:
    root, parent = _copied_along(tree, path)
    del parent[path[-1]]
    return root


def dumps(tree: Any) -> bytes:
    return json.dumps(tree, ensure_ascii=False).encode()


def refused(data: object) -> ChatWireError:
    with pytest.raises(ChatWireError) as caught:
        decode_chat_message(data)  # type: ignore[arg-type]
    return caught.value


def refused_on_encode(message: object) -> ChatWireError:
    with pytest.raises(ChatWireError) as caught:
        encode_chat_message(message)  # type: ignore[arg-type]
    return caught.value


# ---------------------------------------------------------------------- round trips


def test_samples_cover_every_message_type() -> None:
    assert {type(m) for m in SAMPLES.values()} == set(ChatMessage.__args__)
    assert {type(m).event: type(m) for m in SAMPLES.values()}.keys() == SAMPLES.keys()


@pytest.mark.parametrize("event", SAMPLES)
def test_round_trip(event: str) -> None:
    message = SAMPLES[event]
    data = encode_chat_message(message)
    decoded = decode_chat_message(data)
    assert decoded == message and type(decoded) is type(message)
    assert encode_chat_message(decoded) == data


@pytest.mark.parametrize("event", SAMPLES)
def test_wire_form_is_readable_json(event: str) -> None:
    tree = json.loads(ENCODED[event].decode("utf-8"))
    assert list(tree) == ["v", "event", "params"]
    assert tree["v"] == CHAT_VERSION and tree["event"] == event
    assert isinstance(tree["params"], dict)
    assert tree["params"] == msgspec.to_builtins(SAMPLES[event])


def test_wire_form_of_a_message() -> None:
    assert json.loads(ENCODED["x.grp.mem.intro"]) == {
        "v": 1,
        "event": "x.grp.mem.intro",
        "params": {
            "member": {
                "member_id": "member-member-m1",
                "role": "admin",
                "profile": {"display_name": "Mia 🙂", "full_name": 'Mia "M" Doe'},
            }
        },
    }
    assert ENCODED["x.grp.leave"] == b'{"v":1,"event":"x.grp.leave","params":{}}'


def test_defaults_and_values() -> None:
    assert Profile("Bob") == Profile("Bob", "")
    assert GroupProfile("G") == GroupProfile("G", "")
    message = decode_chat_message(
        b'{"v":1,"event":"x.info","params":{"profile":{"display_name":"B"}}}'
    )
    assert message == XInfo(Profile("B"))
    with pytest.raises(AttributeError):
        message.profile = Profile("C")  # type: ignore[misc]  # frozen
    assert hash(SAMPLES["x.grp.inv"]) == hash(decode_chat_message(ENCODED["x.grp.inv"]))


def test_unknown_fields_are_ignored() -> None:
    tree = copy.deepcopy(TREES["x.grp.mem.fwd"])
    tree["later"] = [1, 2]
    tree["params"]["later"] = {"a": None}
    tree["params"]["member"]["profile"]["avatar"] = "…"
    assert decode_chat_message(dumps(tree)) == SAMPLES["x.grp.mem.fwd"]


def test_real_links_are_links() -> None:
    for link in (
        INVITATION,
        SHORT,
        links.ConnectionLink.create(
            links.QueueAddress.create(
                SERVER, random_bytes(24), DhKey.generate().public, QueueMode.CONTACT
            )
        ).to_uri(),
    ):
        message = XGrpMemInv(MEMBER.member_id, link)
        assert decode_chat_message(encode_chat_message(message)).link == link


def test_roles() -> None:
    assert [r.value for r in sorted(GroupRole, key=lambda r: r.level)] == [
        "observer",
        "member",
        "admin",
        "owner",
    ]
    assert GroupRole.OWNER.at_least(GroupRole.ADMIN)
    assert GroupRole.ADMIN.at_least(GroupRole.ADMIN)
    assert not GroupRole.MEMBER.at_least(GroupRole.ADMIN)
    assert GroupRole.OBSERVER.level == 0 and GroupRole.OWNER.level == 3
    for role in GroupRole:
        tree = replaced(TREES["x.grp.mem.new"], ("params", "member", "role"), role.value)
        assert decode_chat_message(dumps(tree)).member.role is role
    for bad in ("Owner", "OWNER", "superuser", "", 3, None):
        refused(dumps(replaced(TREES["x.grp.mem.new"], ("params", "member", "role"), bad)))
        refused(dumps(replaced(TREES["x.grp.inv"], ("params", "invitee_role"), bad)))


# ---------------------------------------------------------------------- ids


def test_new_ids() -> None:
    ids = [make() for make in (new_member_id, new_group_id, new_message_id) for _ in range(200)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert len(value) == ID_LENGTH
        assert len(base64.urlsafe_b64decode(value)) == ID_BYTES
        assert decode_chat_message(encode_chat_message(XGrpMemCon(value))) == XGrpMemCon(value)


def test_id_paths_are_every_id_field() -> None:
    found = {
        (event, path)
        for event, tree in TREES.items()
        for path in paths(tree)
        if isinstance(path[-1], str) and path[-1].endswith("_id")
    }
    assert found == set(ID_PATHS)


@pytest.mark.parametrize(("event", "path"), ID_PATHS)
@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_ids_are_refused(event: str, path: tuple[str, ...], bad: object) -> None:
    assert "_id" in refused(dumps(replaced(TREES[event], path, bad))).args[0]


@pytest.mark.parametrize(("event", "path"), ID_PATHS)
def test_bad_ids_are_not_sent(event: str, path: tuple[str, ...]) -> None:
    def rebuilt(value: Any, keys: tuple[str, ...], bad: object) -> Any:
        if not keys:
            return bad
        inner = rebuilt(getattr(value, keys[0]), keys[1:], bad)
        return msgspec.structs.replace(value, **{keys[0]: inner})

    for bad in BAD_IDS:
        refused_on_encode(rebuilt(SAMPLES[event], path[1:], bad))


def test_ids_of_any_base64url_shape_are_accepted() -> None:
    for value in ("A" * 16, "-" * 16, "_" * 16, "0123456789abcdeZ"):
        assert decode_chat_message(encode_chat_message(XGrpMemDel(value))).member_id == value


def test_an_invitation_names_two_members() -> None:
    with pytest.raises(ChatWireError):
        msgspec.structs.replace(SAMPLES["x.grp.inv"], invitee_id=HOST.member_id)
    tree = replaced(TREES["x.grp.inv"], ("params", "invitee_id"), HOST.member_id)
    assert "same member id" in refused(dumps(tree)).args[0]


# ---------------------------------------------------------------------- strings


STRING_CASES = [
    # (event, path, accepted, refused)
    (
        "x.info",
        ("params", "profile", "display_name"),
        ["B", " Bob ", "Зоя", "🙂" * MAX_DISPLAY_NAME, "x" * MAX_DISPLAY_NAME],
        [
            "",
            " ",
            "\u3000",
            "x" * (MAX_DISPLAY_NAME + 1),
            "Bob\n",
            "Bob\x00",
            "a\tb",
            "\x7f",
            "\x85",
        ],
    ),
    (
        "x.info",
        ("params", "profile", "full_name"),
        ["", " ", "x" * MAX_FULL_NAME],
        ["x" * (MAX_FULL_NAME + 1), "a\nb", "a\rb", "\x1b[31m"],
    ),
    (
        "x.grp.inv",
        ("params", "group", "name"),
        ["G", "x" * MAX_GROUP_NAME],
        ["", "   ", "x" * (MAX_GROUP_NAME + 1), "G\n"],
    ),
    (
        "x.grp.inv",
        ("params", "group", "description"),
        ["", "a\nb\r\n\tc", "x" * MAX_DESCRIPTION],
        ["x" * (MAX_DESCRIPTION + 1), "a\x00", "a\x0b", "a\x1f", "\x9f"],
    ),
    (
        "x.msg.new",
        ("params", "text"),
        ["", "\n", "x" * (MAX_TEXT - 2), '"' * (MAX_TEXT // 2 - 1), "a\r\n\tb"],
        ["x" * (MAX_TEXT - 1), '"' * (MAX_TEXT // 2), "\x00", "a\x07b", "\x1b"],
    ),
    (
        "x.grp.mem.inv",
        ("params", "link"),
        [INVITATION, SHORT, "duplex:/x", "duplex:/" + "a" * (MAX_LINK - 8)],
        [
            "",
            "duplex:/",
            "https://example.org",
            f" {INVITATION}",
            f"{INVITATION}\n",
            "duplex:/a b",
            'duplex:/"',
            "duplex:/\\",
            "duplex:/é",
            "duplex:/" + "a" * (MAX_LINK - 7),
        ],
    ),
]


@pytest.mark.parametrize(("event", "path", "accepted", "bad"), STRING_CASES)
def test_string_bounds(
    event: str, path: tuple[str, ...], accepted: list[str], bad: list[str]
) -> None:
    for value in accepted:
        message = decode_chat_message(dumps(replaced(TREES[event], path, value)))
        assert get(msgspec.to_builtins(message), path[1:]) == value
        assert decode_chat_message(encode_chat_message(message)) == message
    for value in bad:
        refused(dumps(replaced(TREES[event], path, value)))
    for value in (None, 1, ["a"], {"a": "b"}, True):
        refused(dumps(replaced(TREES[event], path, value)))


def test_lone_surrogates_are_refused() -> None:
    data = ENCODED["x.msg.new"].replace(b'"text":"', b'"text":"\\ud800')
    refused(data)
    refused_on_encode(XInfo(Profile("a\ud800")))
    with pytest.raises(ChatWireError):
        XMsgNew(MESSAGE.msg_id, "a\udfff")


def test_a_text_too_long_is_refused_when_made() -> None:
    with pytest.raises(ChatWireError, match="limit"):
        XMsgNew(new_message_id(), "\\" * (MAX_TEXT // 2))


# ---------------------------------------------------------------------- sizes


def _largest() -> dict[str, ChatMessage]:
    wide = "\U0001f600"  # 4 bytes of UTF-8: the widest a name's character gets on the wire
    profile = Profile(wide * MAX_DISPLAY_NAME, wide * MAX_FULL_NAME)
    member = MemberInfo(new_member_id(), GroupRole.OBSERVER, profile)
    link = "duplex:/" + "a" * (MAX_LINK - 8)
    text = '"' * (MAX_TEXT // 2 - 1)  # each escaped as two bytes: MAX_TEXT bytes in all
    return {
        "x.info": XInfo(profile),
        "x.msg.new": XMsgNew(new_message_id(), text),
        "x.grp.inv": XGrpInv(
            new_group_id(),
            GroupProfile(wide * MAX_GROUP_NAME, wide * MAX_DESCRIPTION),
            member,
            new_member_id(),
            GroupRole.OBSERVER,
            link,
        ),
        "x.grp.acpt": XGrpAcpt(new_member_id(), profile),
        "x.grp.mem.new": XGrpMemNew(member),
        "x.grp.mem.intro": XGrpMemIntro(member),
        "x.grp.mem.inv": XGrpMemInv(new_member_id(), link),
        "x.grp.mem.fwd": XGrpMemFwd(member, link),
        "x.grp.mem.info": XGrpMemInfo(new_group_id(), member),
        "x.grp.mem.con": XGrpMemCon(new_member_id()),
        "x.grp.mem.del": XGrpMemDel(new_member_id()),
        "x.grp.leave": XGrpLeave(),
        "x.grp.del": XGrpDel(),
        "x.grp.del.fwd": XGrpDelFwd(new_member_id()),
        "x.grp.msg.fwd": XGrpMsgFwd(new_member_id(), XMsgNew(new_message_id(), text)),
        "x.grp.relay.inv": XGrpRelayInv(new_group_id(), wide * MAX_GROUP_NAME, member),
        "x.grp.relay.acpt": XGrpRelayAcpt(new_group_id(), "duplex:/" + "a" * (MAX_SHORT_LINK - 8)),
        "x.grp.relay.rem": XGrpRelayRem(),
    }


def test_every_message_within_its_field_limits_fits() -> None:
    largest = _largest()
    assert largest.keys() == SAMPLES.keys()
    assert MAX_CHAT_MESSAGE <= envelope.MAX_USER_BODY
    assert MAX_LINK == links.MAX_LINK_TEXT
    for event, message in largest.items():
        data = encode_chat_message(message)
        assert len(data) <= MAX_CHAT_MESSAGE, event
        assert decode_chat_message(data) == message
    carried = ("x.info", "x.grp.acpt", "x.grp.mem.info", "x.grp.relay.inv")
    for event in carried:  # carried as join/allow info
        assert len(encode_chat_message(largest[event])) <= envelope.MAX_INFO // 4, event


def test_size_limit_on_decode() -> None:
    data = ENCODED["x.msg.new"]
    exactly = data[:-1] + b" " * (MAX_CHAT_MESSAGE - len(data)) + b"}"
    assert len(exactly) == MAX_CHAT_MESSAGE
    assert decode_chat_message(exactly) == MESSAGE
    over = data[:-1] + b" " * (MAX_CHAT_MESSAGE + 1 - len(data)) + b"}"
    assert "limit" in refused(over).args[0]
    tree = copy.deepcopy(TREES["x.grp.leave"])
    tree["params"]["padding"] = "x" * MAX_CHAT_MESSAGE  # ignored if it fitted: it does not
    refused(dumps(tree))
    refused(b"x" * (10 * MAX_CHAT_MESSAGE))


def test_size_limit_on_encode() -> None:
    # Field limits keep every message within MAX_CHAT_MESSAGE; beyond them a writer refuses.
    refused_on_encode(XInfo(Profile("x" * (MAX_DISPLAY_NAME + 1))))
    refused_on_encode(XGrpMemInv(MEMBER.member_id, "duplex:/" + "a" * MAX_CHAT_MESSAGE))
    refused_on_encode(
        XGrpInv(
            GROUP,
            GroupProfile("G", "d" * MAX_CHAT_MESSAGE),
            HOST,
            "x" * 16,
            GroupRole.MEMBER,
            SHORT,
        )
    )


# ---------------------------------------------------------------------- frame, version, event


@pytest.mark.parametrize(
    "version", [0, 2, -1, 255, 2**63 - 1, -(2**63), "1", 1.0, 1.5, True, None, [1], {"v": 1}]
)
def test_other_versions_are_refused(version: object) -> None:
    error = refused(dumps(replaced(TREES["x.msg.new"], ("v",), version)))
    if type(version) is int:
        assert f"version {version}" in error.args[0]


def test_huge_versions_are_refused() -> None:
    for digits in ("9" * 30, "-" + "9" * 30, "9" * 5000, "1e400"):
        refused(ENCODED["x.msg.new"].replace(b'"v":1', b'"v":' + digits.encode()))


@pytest.mark.parametrize(
    "event", ["x.msg.neww", "X.MSG.NEW", "", "x.grp.relay.inv", "x" * 33, "x.msg.new ", 1, None, []]
)
def test_unknown_events_are_refused(event: object) -> None:
    refused(dumps(replaced(TREES["x.msg.new"], ("event",), event)))


def test_a_message_of_another_event_is_refused() -> None:
    for event, tree in TREES.items():
        for other in TREES:
            if other != event and TREES[other]["params"].keys() - tree["params"].keys():
                refused(dumps(replaced(tree, ("event",), other)))


@pytest.mark.parametrize("key", ["v", "event", "params"])
def test_missing_frame_fields_are_refused(key: str) -> None:
    refused(dumps(deleted(TREES["x.grp.leave"], (key,))))


@pytest.mark.parametrize("event", SAMPLES)
def test_missing_fields_are_refused(event: str) -> None:
    optional = {"full_name", "description"}
    for path in paths(TREES[event]["params"], ("params",)):
        if path[-1] not in optional:
            refused(dumps(deleted(TREES[event], path)))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"null",
        b"[]",
        b"{}",
        b"1",
        b'"x.msg.new"',
        b'[1,"x.grp.leave",{}]',
        b'{"v":1,"event":"x.grp.leave","params":[]}',
        b'{"v":1,"event":"x.grp.leave","params":null}',
        b'{"v":1,"event":"x.grp.leave","params":{}',
        b'{"v":1,"event":"x.grp.leave","params":{}}}',
        b'{"v":1,"event":"x.grp.leave","params":{}} x',
        b"\xef\xbb\xbf" + ENCODED["x.grp.leave"],  # a byte-order mark
        b"\xff\xfe",
        b'{"v":1,"event":"x.msg.new","params":{"msg_id":"messagemessage-1","text":"\xff"}}',
        b'{"v":1,"event":"x.msg.new","params":{"msg_id":"messagemessage-1","text":"\xed\xa0\x80"}}',
        b'{"v":1,"event":"x.grp.leave","params":{"x":' + b"[" * 7000 + b"]" * 7000 + b"}}",
        b'{"v":1,"event":"x.grp.leave","params":{"x":'
        + b'{"a":' * 2500
        + b"1"
        + b"}" * 2500
        + b"}}",
        b'{"v":1,"event":"x.grp.leave","x":' + b"[" * 7000 + b"]" * 7000 + b',"params":{}}',
        b"[" * MAX_CHAT_MESSAGE,
        ENCODED["x.msg.new"].replace(b"{", b"{\x00", 1),
    ],
)
def test_malformed_bytes_are_refused(data: bytes) -> None:
    refused(data)


@pytest.mark.parametrize(
    "data", ["{}", bytearray(ENCODED["x.grp.leave"]), None, 1, memoryview(b"{}")]
)
def test_only_bytes_are_read(data: object) -> None:
    assert "bytes" in refused(data).args[0]


@pytest.mark.parametrize("message", [None, 1, b"{}", Profile("a"), GroupRole.OWNER, {"v": 1}])
def test_only_chat_messages_are_encoded(message: object) -> None:
    refused_on_encode(message)


def test_wrong_field_types_are_not_sent() -> None:
    refused_on_encode(XInfo(5))  # type: ignore[arg-type]
    refused_on_encode(XInfo({"display_name": "a"}))  # type: ignore[arg-type]
    refused_on_encode(XGrpMemNew(MemberInfo(MEMBER.member_id, "member", MEMBER.profile)))  # type: ignore[arg-type]
    refused_on_encode(XGrpMemCon(b"member-member-m1"))  # type: ignore[arg-type]
    refused_on_encode(XGrpMsgFwd(MEMBER.member_id, XInfo(Profile("a"))))  # type: ignore[arg-type]


def test_the_error() -> None:
    error = refused(b"{")
    assert isinstance(error, DuplexError) and error.code == "CHAT"
    assert str(error).startswith("CHAT: ")
    role = "z" * 10_000
    long = refused(dumps(replaced(TREES["x.grp.mem.new"], ("params", "member", "role"), role)))
    assert len(str(long)) < 400  # a peer's 10 KB value is not echoed into logs


def test_the_module_imports_only_errors_of_the_project() -> None:
    tree = ast.parse(Path(protocol.chat.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    ours = {
        name
        for name in imported
        if name.split(".")[0] in ("protocol", "storage", "actors", "bench")
    }
    assert ours == {"protocol.errors"}


# ---------------------------------------------------------------------- bad input, by hypothesis
#
# Generating an example costs hypothesis far more than reading one costs us, so each example
# drives several inputs: the same mutation applied to every message, the same JSON value put
# in every place. Inputs per run (examples * inputs per example): random bytes 600 * 5,
# random JSON 200 * 17, frames 100 * 1, mutated bytes 300 * 14, mutated messages 300 * 14,
# oversized strings and lists 150 * 14, wrong versions 150 * 14: about 19,000 inputs, of which
# about 18,000 are refused (counted once by wrapping decode_chat_message).


def accepted_or_refused(data: bytes) -> ChatMessage | None:
    """The property every input must have: a valid message that survives a round trip, or
    ChatWireError; any other exception fails the test."""
    try:
        message = decode_chat_message(data)
    except ChatWireError as exc:
        assert exc.code == "CHAT"
        return None
    assert isinstance(message, ChatMessage.__args__)
    assert decode_chat_message(encode_chat_message(message)) == message
    return message


KEYS = sorted(
    {key for tree in TREES.values() for path in paths(tree) for key in path if isinstance(key, str)}
)
VALID_STRINGS = sorted(
    {v for tree in TREES.values() for p in paths(tree) if isinstance(v := get(tree, p), str)}
    | {role.value for role in GroupRole}
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(VALID_STRINGS)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
EVENTS = st.sampled_from(sorted(SAMPLES)) | st.text(max_size=40)
PREFIXES = [
    b'{"v":1,"event":"x.msg.new","params":',
    b'{"v":1,"event":',
    b'{"v":',
    b'{"v":1,"event":"x.grp.inv","params":{"group_id":',
]
PATHS = {event: paths(tree) for event, tree in TREES.items()}
# x.grp.leave's params ({}) are those of every message without fields, and only theirs
WITHOUT_FIELDS = [cls() for cls in ChatMessage.__args__ if not cls.__struct_fields__]


@fast(600)
@given(data=st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    accepted_or_refused(data)
    for prefix in PREFIXES:
        accepted_or_refused(prefix + data)


@fast(200)
@given(value=JSON_VALUES)
def test_random_json(value: Any) -> None:
    accepted_or_refused(dumps(value))
    other = accepted_or_refused(dumps(replaced(TREES["x.grp.leave"], ("event",), value)))
    assert other is None or other in WITHOUT_FIELDS
    if value != CHAT_VERSION or type(value) is not int:
        refused(dumps(replaced(TREES["x.grp.leave"], ("v",), value)))
    for tree in TREES.values():
        accepted_or_refused(dumps(replaced(tree, ("params",), value)))


@fast(100)
@given(
    version=st.just(CHAT_VERSION) | JSON_SCALARS,
    event=EVENTS,
    params=JSON_VALUES | st.sampled_from([tree["params"] for tree in TREES.values()]),
)
def test_random_frames(version: Any, event: Any, params: Any) -> None:
    message = accepted_or_refused(dumps({"v": version, "event": event, "params": params}))
    if message is not None:
        assert type(version) is int and version == CHAT_VERSION and event == type(message).event


def _mutated(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    mutable = bytearray(data)
    for op, where, byte in ops:
        i = where % (len(mutable) + 1)
        if op == "flip" and i < len(mutable):
            mutable[i] ^= byte or 1
        elif op == "delete":
            del mutable[i : i + 1 + byte % 8]
        elif op == "insert":
            mutable[i:i] = bytes([byte])
        elif op == "cut":
            del mutable[i:]
        elif op == "repeat":
            mutable[i:i] = mutable[i : i + byte]
    return bytes(mutable)


@fast(300)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["flip", "delete", "insert", "cut", "repeat"]),
            st.integers(0),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_bytes(ops: list[tuple[str, int, int]]) -> None:
    for data in ENCODED.values():
        accepted_or_refused(_mutated(data, ops))


@fast(300)
@given(
    choice=st.integers(0),
    action=st.sampled_from(["replace", "delete", "add"]),
    value=JSON_VALUES,
)
def test_mutated_messages(choice: int, action: str, value: Any) -> None:
    for event, tree in TREES.items():
        path = PATHS[event][choice % len(PATHS[event])]
        if action == "replace":
            mutated = replaced(tree, path, value)
        elif action == "delete":
            mutated = deleted(tree, path)
            if path[-1] not in ("full_name", "description"):
                refused(dumps(mutated))
        elif isinstance(get(tree, path[:-1]), dict):
            mutated = replaced(tree, (*path[:-1], "zz_added"), value)  # ignored if it fits
        else:
            continue
        accepted_or_refused(dumps(mutated))


@fast(150)
@given(
    choice=st.integers(0),
    size=st.integers(MAX_TEXT + 1, MAX_CHAT_MESSAGE + 1024),  # over every field's limit
    char=st.sampled_from(["x", "A", '"', "é", "🙂", "\n"]),
    as_list=st.booleans(),
)
def test_oversized_strings_and_lists(choice: int, size: int, char: str, as_list: bool) -> None:
    value: Any = [char] * (size // 4) if as_list else char * size
    for event, tree in TREES.items():
        path = PATHS[event][choice % len(PATHS[event])]
        refused(dumps(replaced(tree, path, value)))


@fast(150)
@given(version=JSON_SCALARS.filter(lambda v: v != CHAT_VERSION or type(v) is not int))
def test_wrong_versions(version: Any) -> None:
    for tree in TREES.values():
        refused(dumps(replaced(tree, ("v",), version)))


# ---------------------------------------------------------------------- short links' data


def test_link_data_round_trips_and_is_refused_as_a_chat_message() -> None:
    group = GroupLinkData(GROUP, GroupProfile("Readers", "books"), HOST, [SHORT])
    relay = RelayLinkData(GROUP)
    for data in (group, relay):
        encoded = encode_link_data(data)
        assert decode_link_data(encoded) == data
        refused(encoded)  # link data is never a chat message, nor the other way round
    with pytest.raises(ChatWireError):
        decode_link_data(ENCODED["x.msg.new"])


def test_link_data_bounds() -> None:
    many = [links.ShortLink.generate(SERVER).to_uri() for _ in range(MAX_RELAYS + 1)]
    assert all(len(link) <= MAX_SHORT_LINK for link in many)
    profile = GroupProfile("Readers")
    encode_link_data(GroupLinkData(GROUP, profile, HOST, many[:MAX_RELAYS]))
    for relays in (many, [], [SHORT, SHORT], ["duplex:/" + "a" * MAX_SHORT_LINK]):
        with pytest.raises(ChatWireError):
            encode_link_data(GroupLinkData(GROUP, profile, HOST, relays))
    wide = GroupProfile("Readers", "\U0001f600" * MAX_DESCRIPTION)  # fields fit, the whole not
    with pytest.raises(ChatWireError, match="limit"):
        encode_link_data(GroupLinkData(GROUP, wide, HOST, [SHORT]))
    assert MAX_LINK_USER_DATA <= MAX_LINK_DATA // 2  # room for the address link next to it
    with pytest.raises(ChatWireError):
        decode_link_data(b"x" * (MAX_LINK_USER_DATA + 1))
    with pytest.raises(ChatWireError):
        encode_link_data(XInfo(Profile("a")))  # type: ignore[arg-type]


@fast(300)
@given(data=st.binary(max_size=200) | st.sampled_from([encode_link_data(RelayLinkData(GROUP))]))
def test_link_data_random_bytes(data: bytes) -> None:
    try:
        decoded = decode_link_data(data)
    except ChatWireError:
        return
    assert decode_link_data(encode_link_data(decoded)) == decoded
