"""Tests of protocol.links: text forms, versions, short-link keys and data, bad input."""

from __future__ import annotations

import string

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.address import ServerAddress, b64url
from protocol.crypto import DhKey, hkdf, random_bytes, seal
from protocol.errors import DuplexError, LinkError
from protocol.links import (
    MAX_LINK_QUEUES,
    MAX_LINK_TEXT,
    SUPPORTED_LINK_VERSIONS,
    ConnectionLink,
    LinkData,
    QueueAddress,
    ShortLink,
    decrypt_link_data,
    derive_link_id,
    encrypt_link_data,
    parse_any,
    parse_link,
    parse_short_link,
)
from protocol.queue import MAX_LINK_DATA, QueueMode

SERVER = ServerAddress(bytes(range(32)), "relay.example.org", 5223)
SERVER6 = ServerAddress(bytes(range(32, 64)), "2001:db8::1", 443)
LONG_SERVER = ServerAddress(bytes(32), ".".join(["a" * 63] * 4)[:253], 65535)


def queue(mode: QueueMode, server: ServerAddress = SERVER) -> QueueAddress:
    return QueueAddress.create(server, random_bytes(24), DhKey.generate().public, mode)


def encoded(obj: object) -> str:
    return b64url(msgspec.msgpack.encode(obj))


def raw_queue(q: QueueAddress) -> list[object]:
    return [q.server, q.snd_id, q.dh_public, q.mode.value]


INVITATION = ConnectionLink.create(queue(QueueMode.MESSAGING))
CONTACT = ConnectionLink.create(queue(QueueMode.CONTACT))
REDUNDANT = ConnectionLink.create(queue(QueueMode.MESSAGING), queue(QueueMode.MESSAGING, SERVER6))
SHORT = ShortLink.generate(SERVER)
SHORT6 = ShortLink.generate(SERVER6)
DATA = LinkData(CONTACT, b"group profile and relay links")
VALID_LINKS = (INVITATION, CONTACT, REDUNDANT, SHORT, SHORT6)
VALID_TEXTS = tuple(link.to_uri() for link in VALID_LINKS)


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("link", [INVITATION, CONTACT, REDUNDANT], ids=["inv", "contact", "2q"])
def test_connection_link_round_trip(link: ConnectionLink) -> None:
    uri = link.to_uri()
    assert uri.startswith(f"duplex:/{link.kind}#")
    assert parse_link(uri) == link
    assert parse_any(uri) == link
    assert parse_link(f"  {uri}\n") == link  # pasted with whitespace
    assert link.agreed_version == 1


def test_kind_follows_mode() -> None:
    assert INVITATION.kind == "invitation" and INVITATION.mode is QueueMode.MESSAGING
    assert CONTACT.kind == "contact" and CONTACT.mode is QueueMode.CONTACT


def test_queue_address_fields() -> None:
    q = REDUNDANT.queues[1]
    assert q.server == "duplex://" + b64url(SERVER6.fingerprint) + "@[2001:db8::1]:443"
    assert q.server_address == SERVER6
    assert hash(q) == hash(parse_link(REDUNDANT.to_uri()).queues[1])


@pytest.mark.parametrize("short", [SHORT, SHORT6], ids=["dns", "ipv6"])
def test_short_link_round_trip(short: ShortLink) -> None:
    uri = short.to_uri()
    server = str(short.server).removeprefix("duplex://")
    assert uri == f"duplex:/l/{server}/{b64url(short.link_id)}#{b64url(short.key)}"
    assert parse_short_link(uri) == short
    assert parse_any(uri) == short
    assert b64url(short.key) not in repr(short)


def test_link_data_round_trip() -> None:
    blob = encrypt_link_data(SHORT, DATA)
    assert decrypt_link_data(SHORT, blob) == DATA
    assert encrypt_link_data(SHORT, DATA) != blob  # random nonce
    empty = LinkData(INVITATION)
    assert decrypt_link_data(SHORT, encrypt_link_data(SHORT, empty)) == empty
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(DATA))[0] == LinkData.version == 1


def test_longest_link_fits() -> None:
    queues = [queue(QueueMode.CONTACT, LONG_SERVER) for _ in range(MAX_LINK_QUEUES)]
    link = ConnectionLink.create(*queues)
    assert len(link.to_uri()) <= MAX_LINK_TEXT
    assert parse_link(link.to_uri()) == link
    short = ShortLink.generate(LONG_SERVER)
    assert parse_short_link(short.to_uri()) == short


# ---------------------------------------------------------------------- kind, versions, structure


def test_kind_must_match_mode() -> None:
    payload = CONTACT.to_uri().split("#", 1)[1]
    with pytest.raises(LinkError, match="invitation link must hold invitation queues"):
        parse_link(f"duplex:/invitation#{payload}")
    payload = INVITATION.to_uri().split("#", 1)[1]
    with pytest.raises(LinkError, match="contact link must hold contact queues"):
        parse_any(f"duplex:/contact#{payload}")


def test_mixed_modes_and_duplicates_refused() -> None:
    with pytest.raises(LinkError, match="same mode"):
        ConnectionLink.create(queue(QueueMode.MESSAGING), queue(QueueMode.CONTACT))
    q = queue(QueueMode.CONTACT)
    with pytest.raises(LinkError, match="distinct"):
        ConnectionLink.create(q, q)
    with pytest.raises(LinkError, match="same mode"):
        parse_link(
            "duplex:/contact#" + encoded([1, 1, [raw_queue(q), raw_queue(INVITATION.queues[0])]])
        )


@pytest.mark.parametrize(
    ("versions", "message"),
    [((2, 3), "speaks versions 2..3"), ((3, 2), "empty"), ((0, 1), "1..65535")],
)
def test_versions_without_overlap_refused(versions: tuple[int, int], message: str) -> None:
    # a future layout: the queues are no longer what this version reads, the version is
    body = encoded([*versions, "some future layout"])
    with pytest.raises(LinkError, match=message):
        parse_link(f"duplex:/contact#{body}")
    with pytest.raises(LinkError, match=message):
        ConnectionLink(*versions, CONTACT.queues)


def test_overlapping_range_and_appended_fields_accepted() -> None:
    """A later version may append fields; a range overlapping ours agrees on our maximum."""
    q = raw_queue(CONTACT.queues[0])
    link = parse_link("duplex:/contact#" + encoded([1, 5, [[*q, "new field"]], {"new": 1}]))
    assert link.max_version == 5
    assert link.agreed_version == SUPPORTED_LINK_VERSIONS[1]
    assert link.queues == CONTACT.queues


def test_queue_count_bounded() -> None:
    with pytest.raises(LinkError, match=r"1\.\.4"):
        ConnectionLink.create()
    too_many = [raw_queue(queue(QueueMode.CONTACT)) for _ in range(MAX_LINK_QUEUES + 1)]
    with pytest.raises(LinkError, match="malformed contact link"):
        parse_link("duplex:/contact#" + encoded([1, 1, too_many]))


@pytest.mark.parametrize(
    "server",
    [
        "duplex://" + b64url(bytes(32)) + "@host:0443",  # not canonical: leading zero
        "duplex://" + b64url(bytes(32)) + "@host:70000",  # out of range
        "duplex://" + b64url(bytes(32)) + "@[1.2.3.4]:443",  # brackets around IPv4
        " duplex://" + b64url(bytes(32)) + "@host:443",  # not canonical: space
        "https://example.org",
    ],
)
def test_queue_server_must_be_canonical(server: str) -> None:
    q = raw_queue(CONTACT.queues[0])
    with pytest.raises(LinkError):
        parse_link("duplex:/contact#" + encoded([1, 1, [[server, *q[1:]]]]))


def test_construction_validates() -> None:
    q = CONTACT.queues[0]
    with pytest.raises(LinkError, match="24 bytes"):
        QueueAddress.create(SERVER, b"short", q.dh_public, QueueMode.CONTACT)
    with pytest.raises(LinkError, match="32 bytes"):
        QueueAddress.create(SERVER, q.snd_id, q.dh_public[:31], QueueMode.CONTACT)
    with pytest.raises(LinkError, match="queue mode"):
        QueueAddress.create(SERVER, q.snd_id, q.dh_public, "c")  # type: ignore[arg-type]
    with pytest.raises(LinkError, match="tuple"):
        ConnectionLink(1, 1, [q])  # type: ignore[arg-type]
    with pytest.raises(LinkError, match="ConnectionLink"):
        LinkData(b"link")  # type: ignore[arg-type]


def test_errors_are_link_errors() -> None:
    with pytest.raises(LinkError) as caught:
        parse_any("https://example.org")
    assert isinstance(caught.value, DuplexError)
    assert caught.value.code == "LINK"
    assert str(caught.value).startswith("LINK: not a connection link")


@pytest.mark.parametrize(
    "text",
    [
        None,
        b"duplex:/contact#AA",
        "",
        "duplex:/contact#",
        "duplex:/contact#A",  # impossible length
        "duplex:/contact#AB",  # non-canonical: trailing bits set
        "duplex:/contact#AA==",  # padding
        "duplex:/contact#A+/A",  # standard, not url-safe, alphabet
        "duplex:/Contact#" + "A" * 8,
        "duplex:/invitation#" + b64url(b"\xc1"),  # never-used msgpack byte
        "duplex:/invitation#" + encoded([True, 1, []]),
        "duplex:/invitation#" + encoded({"min_version": 1}),
        "duplex:/l/" + b64url(bytes(32)) + "@host:443/" + "A" * 32,  # no key
        "duplex:/contact#" + b64url(b"\x93\x01\x01\x91\x94\xa1\xe4"),  # str not UTF-8
        "duplex:/contact#" + b64url(b"\x94\x01\x01\x90" + b"\x91" * 2000 + b"\x01"),  # deep
    ],
)
def test_malformed_texts(text: object) -> None:
    with pytest.raises(LinkError):
        parse_any(text)  # type: ignore[arg-type]


def test_parse_link_points_at_short_links() -> None:
    with pytest.raises(LinkError, match="short link"):
        parse_link(SHORT.to_uri())
    with pytest.raises(LinkError, match="not a short link"):
        parse_short_link(CONTACT.to_uri())


# ---------------------------------------------------------------------- short-link keys and data


def test_link_id_derivation() -> None:
    key = random_bytes(32)
    assert derive_link_id(key) == derive_link_id(key)
    assert len(derive_link_id(key)) == 24
    assert derive_link_id(key) != key[:24]
    ids = {derive_link_id(random_bytes(32)) for _ in range(200)}
    assert len(ids) == 200
    assert ShortLink.from_key(SERVER, key).link_id == derive_link_id(key)
    assert ShortLink.generate(SERVER).key != ShortLink.generate(SERVER).key


def test_link_id_must_belong_to_key() -> None:
    with pytest.raises(LinkError, match="does not belong"):
        ShortLink(SERVER, SHORT6.link_id, SHORT.key)
    forged = f"duplex:/l/{SHORT.to_uri()[10:].split('/')[0]}/{b64url(SHORT6.link_id)}"
    with pytest.raises(LinkError, match="does not belong"):
        parse_short_link(f"{forged}#{b64url(SHORT.key)}")


def test_link_data_unreadable_without_key() -> None:
    marker = b"secret group profile " * 4
    blob = encrypt_link_data(SHORT, LinkData(CONTACT, marker))
    for plaintext in (
        marker[:16],
        CONTACT.queues[0].snd_id,
        CONTACT.queues[0].dh_public,
        CONTACT.queues[0].server.encode(),
        b"relay.example.org",
    ):
        assert plaintext not in blob
    other = ShortLink.generate(SERVER)
    with pytest.raises(LinkError, match="does not open"):
        decrypt_link_data(other, blob)
    # the same key on another id (ad = link id) does not open it either
    with pytest.raises(LinkError, match="does not open"):
        decrypt_link_data(SHORT6, encrypt_link_data(SHORT, DATA))
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(LinkError, match="does not open"):
        decrypt_link_data(SHORT, bytes(tampered))


def _sealed(short: ShortLink, plaintext: bytes) -> bytes:
    """Encrypt arbitrary plaintext the way link data is (the scheme documented in the module)."""
    return seal(hkdf(short.key, b"duplex/link-data"), plaintext, short.link_id)


def test_link_data_that_opens_but_does_not_decode() -> None:
    with pytest.raises(LinkError, match="malformed"):
        decrypt_link_data(SHORT, _sealed(SHORT, b"not msgpack\xc1"))
    future = msgspec.msgpack.encode([2, "a future layout"])
    with pytest.raises(LinkError, match="version 2"):
        decrypt_link_data(SHORT, _sealed(SHORT, future))
    deep = b"\x92\x01" + b"\x91" * 4000 + b"\x01"  # skipped while reading the version
    with pytest.raises(LinkError, match="malformed"):
        decrypt_link_data(SHORT, _sealed(SHORT, deep))
    old_link = msgspec.msgpack.encode([1, [0, 1, []], b""])
    with pytest.raises(LinkError):
        decrypt_link_data(SHORT, _sealed(SHORT, old_link))


def test_link_data_size_limit() -> None:
    fits = LinkData(CONTACT, bytes(MAX_LINK_DATA - 1024))
    assert len(encrypt_link_data(SHORT, fits)) <= MAX_LINK_DATA
    with pytest.raises(LinkError, match="limit"):
        encrypt_link_data(SHORT, LinkData(CONTACT, bytes(MAX_LINK_DATA)))
    with pytest.raises(LinkError, match="at most"):
        LinkData(CONTACT, bytes(MAX_LINK_DATA + 1))
    with pytest.raises(LinkError, match="limit"):
        decrypt_link_data(SHORT, bytes(MAX_LINK_DATA + 1))
    with pytest.raises(LinkError, match="bytes"):
        decrypt_link_data(SHORT, "text")  # type: ignore[arg-type]


def test_text_size_limit() -> None:
    huge = "duplex:/contact#" + "A" * MAX_LINK_TEXT
    with pytest.raises(LinkError, match="limit"):
        parse_any(huge)
    too_long = ServerAddress(bytes(32), "h" * 2000, 1)  # so no link can outgrow the limit
    with pytest.raises(LinkError, match="at most 320"):
        queue(QueueMode.CONTACT, too_long)
    with pytest.raises(LinkError, match="at most 320"):
        ShortLink.generate(too_long)


# ---------------------------------------------------------------------- bad input, at random

_B64 = string.ascii_letters + string.digits + "-_"
_KINDS = st.sampled_from(["invitation", "contact"])
_PREFIXES = st.sampled_from(
    [
        "",
        " ",
        "duplex:/",
        "duplex:/invitation#",
        "duplex:/contact#",
        "duplex:/l/",
        "duplex:/l/" + b64url(SERVER.fingerprint) + "@relay.example.org:5223/",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.binary(max_size=30)
    | st.text(max_size=10)
    | st.sampled_from([0, 1, 2, "m", "c", str(SERVER), bytes(24), bytes(32)])
)
_MSGPACK = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(["", "t", "link"]), inner, max_size=3)
    ),
    max_leaves=6,
)
_NEAR_QUEUE = st.one_of(
    st.tuples(
        st.sampled_from([str(SERVER), str(SERVER6), "duplex://x@h:1", str(SERVER) + " ", b"s"]),
        st.sampled_from([bytes(24), bytes(23), bytes(25), "id"]),
        st.sampled_from([bytes(32), bytes(31), bytes(24), None]),
        st.sampled_from(["c", "m", "x", 1]),
    ).map(list),
    st.lists(st.sampled_from([str(SERVER), bytes(24), bytes(32), "c"]), max_size=5),
)
_NEAR_LINK = st.tuples(
    st.sampled_from([1, 1, 0, 2, -1, 2**32, True]),
    st.sampled_from([1, 1, 0, 2, 70000, None]),
    st.lists(_NEAR_QUEUE, max_size=3),
).map(list)


def _mutate(text: str, position: int, char: str, op: str) -> str:
    i = position % (len(text) + 1)
    return {
        "truncate": text[:i],
        "replace": text[:i] + char + text[i + 1 :],
        "insert": text[:i] + char + text[i:],
        "delete": text[:i] + text[i + 1 :],
        "double": text[:i] + text[i:] * 2,
    }[op]


def _mutate_payload(text: str, position: int, byte: int, op: str) -> str:
    head, _ = text.split("#", 1)
    data = bytearray(
        msgspec.msgpack.encode(parse_any(text)) if "/l/" not in text else random_bytes(32)
    )
    i = position % (len(data) + 1)
    if op == "truncate":
        del data[i:]
    elif op == "insert":
        data.insert(i, byte)
    elif data:
        data[i % len(data)] ^= byte or 1
    return f"{head}#{b64url(bytes(data))}"


_TEXTS = st.one_of(
    st.builds(str.__add__, _PREFIXES, st.text(max_size=200)),
    st.builds(str.__add__, _PREFIXES, st.text(alphabet=_B64 + "=#/@:.[]% \n", max_size=200)),
    st.builds(lambda k, d: f"duplex:/{k}#{b64url(d)}", _KINDS, st.binary(max_size=300)),
    st.builds(lambda k, o: f"duplex:/{k}#{encoded(o)}", _KINDS, _MSGPACK | _NEAR_LINK),
    st.builds(
        _mutate,
        st.sampled_from(VALID_TEXTS),
        st.integers(min_value=0),
        st.characters(),
        st.sampled_from(["truncate", "replace", "insert", "delete", "double"]),
    ),
    st.builds(
        _mutate_payload,
        st.sampled_from(VALID_TEXTS),
        st.integers(min_value=0),
        st.integers(0, 255),
        st.sampled_from(["truncate", "insert", "flip"]),
    ),
    st.sampled_from([*VALID_TEXTS, "duplex:/contact#" + "A" * 5000, "\x00" * 5000]),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS)
def test_parsers_raise_only_link_error(text: str) -> None:
    for parse in (parse_any, parse_link, parse_short_link):
        try:
            result = parse(text)
        except LinkError:
            continue
        assert isinstance(result, ConnectionLink | ShortLink)
        assert parse_any(result.to_uri()) == result


def _near_data(version: object, link: object, user_data: object) -> bytes:
    return msgspec.msgpack.encode([version, link, user_data])


_VALID_BLOB = encrypt_link_data(SHORT, DATA)
_BLOBS = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda i, b: _VALID_BLOB[: i % len(_VALID_BLOB)] + b, st.integers(0), st.binary(max_size=8)
    ),
    st.builds(lambda o: _sealed(SHORT, msgspec.msgpack.encode(o)), _MSGPACK),
    st.builds(lambda p: _sealed(SHORT, p), st.binary(max_size=200)),
    st.builds(
        lambda v, link, u: _sealed(SHORT, _near_data(v, link, u)),
        st.sampled_from([1, 2, 0, "1", None]),
        _NEAR_LINK | st.just([1, 1, [raw_queue(CONTACT.queues[0])]]) | _MSGPACK,
        st.binary(max_size=40) | _SCALARS,
    ),
    st.just(_VALID_BLOB),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=_BLOBS)
def test_decrypt_link_data_raises_only_link_error(blob: bytes) -> None:
    for short in (SHORT, SHORT6):  # SHORT6: the wrong key for every blob here
        try:
            data = decrypt_link_data(short, blob)
        except LinkError:
            continue
        assert short is SHORT
        assert isinstance(data, LinkData)
        assert decrypt_link_data(short, encrypt_link_data(short, data)) == data
