"""Connection links and short links: what one user hands another to connect; pure, no I/O.

Owns the text forms people pass around, the MessagePack structs inside them, and the
encryption of short-link data. Must not: do I/O, talk to a server (resolving a short link is
`LGET`, done by the client), or know what the chat puts in `LinkData.user_data`.

Forms
-----
Connection links carry MessagePack in unpadded base64url, in the URI fragment::

    duplex:/invitation#<base64url(msgpack(ConnectionLink))>    one-time, queue mode messaging
    duplex:/contact#<base64url(msgpack(ConnectionLink))>       reusable, queue mode contact

The kind in the path must match the mode of every queue in the link.

Short links name encrypted link data that the link's owner stored on a contact queue with
`LSET`; anyone holding the link reads it with `LGET link_id` and opens it with the key::

    duplex:/l/<fingerprint>@<host>:<port>/<link_id>#<key>

The server is its address without the ``duplex://`` scheme (the fingerprint is 43 base64url
characters and hosts hold no ``/``, so the path splits unambiguously; IPv6 hosts keep their
brackets). `link_id` is 32 and `key` 43 base64url characters. The key is random (32 bytes);
the id is derived from it, ``HKDF(key, info="duplex/link-id")[:24]``, so nobody can choose an
id that collides with another link's, and the fragment (the key) is never sent to the server.
The data is ``seal(HKDF(key, info="duplex/link-data"), msgpack(LinkData), ad=link_id)``.

Versions
--------
Every struct is versioned, by itself or by the struct around it. A `ConnectionLink` starts
with the range of agent versions its creator speaks (``min_version, max_version``); a range
with no overlap with `SUPPORTED_LINK_VERSIONS` is refused with a message saying so, before
the rest is read. `QueueAddress` is versioned by the link around it. `LinkData` starts with its
tag, the layout version (`LINK_DATA_VERSION`). All structs are MessagePack arrays: a later
version may append fields, which this one ignores; anything else takes a new version.

Parsing is strict and total: whatever the input (any object, any text, any bytes), parsing
returns a valid value or raises `LinkError` with the reason; never another exception. Base64url
must be canonical, server addresses must be in their canonical form, texts are limited to
`MAX_LINK_TEXT` characters before anything is decoded, so each link has one text form.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Annotated, ClassVar, Final

import msgspec
import msgspec.inspect

from protocol.address import SCHEME, ServerAddress, b64url
from protocol.crypto import CryptoError, hkdf, open_sealed, random_bytes, seal
from protocol.errors import ConfigurationError, LinkError
from protocol.queue import ID_SIZE, KEY_SIZE, MAX_LINK_DATA, Id, PublicKey, QueueMode

__all__ = [
    "CONTACT",
    "INVITATION",
    "LINK_DATA_VERSION",
    "MAX_LINK_QUEUES",
    "MAX_LINK_TEXT",
    "MAX_SERVER_TEXT",
    "SUPPORTED_LINK_VERSIONS",
    "ConnectionLink",
    "LinkData",
    "QueueAddress",
    "ShortLink",
    "decrypt_link_data",
    "derive_link_id",
    "encrypt_link_data",
    "parse_any",
    "parse_link",
    "parse_short_link",
]

SUPPORTED_LINK_VERSIONS: Final = (1, 1)
LINK_DATA_VERSION: Final = 1
MAX_LINK_TEXT: Final = 4 * 1024  # characters, checked before any decoding
MAX_LINK_QUEUES: Final = 4  # queue addresses in one link (redundancy)
MAX_SERVER_TEXT: Final = 320  # "duplex://" + 43 + "@" + a 253-character host + ":65535", and some
_MAX_VERSION: Final = 0xFFFF

INVITATION: Final = "invitation"
CONTACT: Final = "contact"
_KIND_OF_MODE: Final = {QueueMode.MESSAGING: INVITATION, QueueMode.CONTACT: CONTACT}

_LINK_ID_INFO: Final = b"duplex/link-id"
_LINK_DATA_INFO: Final = b"duplex/link-data"
_PREFIX: Final = "duplex:/"
_SHORT_PREFIX: Final = "duplex:/l/"

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_CONNECTION_LINK = re.compile(r"duplex:/(invitation|contact)#([A-Za-z0-9_-]+)")
_SHORT_LINK = re.compile(
    r"duplex:/l/([A-Za-z0-9_-]{43}@(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5})"
    r"/([A-Za-z0-9_-]{32})#([A-Za-z0-9_-]{43})"
)

_STRUCT = {"frozen": True, "array_like": True}

# ---------------------------------------------------------------------- structs


class QueueAddress(msgspec.Struct, **_STRUCT):
    """Where to send to reach a link's creator: a queue's sender side and its e2e key.

    `server` is the server's address in its canonical text form (`str(ServerAddress)`);
    `server_address` parses it. `dh_public` is the recipient's end-to-end X25519 public key.
    Construction validates every field and raises `LinkError`.
    """

    server: Annotated[str, msgspec.Meta(max_length=MAX_SERVER_TEXT)]
    snd_id: Id
    dh_public: PublicKey
    mode: QueueMode

    def __post_init__(self) -> None:
        _canonical_server(self.server)
        _check_bytes(self.snd_id, ID_SIZE, "a sender id")
        _check_bytes(self.dh_public, KEY_SIZE, "an X25519 public key")
        if not isinstance(self.mode, QueueMode):
            raise LinkError(f"not a queue mode: {self.mode!r}")

    @classmethod
    def create(
        cls, server: ServerAddress | str, snd_id: bytes, dh_public: bytes, mode: QueueMode
    ) -> QueueAddress:
        return cls(str(server), snd_id, dh_public, mode)

    @property
    def server_address(self) -> ServerAddress:
        return ServerAddress.parse(self.server)  # validated at construction: cannot fail


class ConnectionLink(msgspec.Struct, **_STRUCT):
    """An invitation (one-time, mode messaging) or a contact address (reusable, mode contact).

    `min_version..max_version` is the range of agent versions the creator speaks; it must
    overlap `SUPPORTED_LINK_VERSIONS`. `queues` holds 1..`MAX_LINK_QUEUES` distinct queue
    addresses, all of the same mode; later versions use more than one for redundancy.
    """

    min_version: Annotated[int, msgspec.Meta(ge=1, le=_MAX_VERSION)]
    max_version: Annotated[int, msgspec.Meta(ge=1, le=_MAX_VERSION)]
    queues: Annotated[
        tuple[QueueAddress, ...], msgspec.Meta(min_length=1, max_length=MAX_LINK_QUEUES)
    ]

    def __post_init__(self) -> None:
        _check_versions(self.min_version, self.max_version)
        queues = self.queues
        if not isinstance(queues, tuple) or not all(isinstance(q, QueueAddress) for q in queues):
            raise LinkError("a link's queues are a tuple of QueueAddress")
        if not 1 <= len(queues) <= MAX_LINK_QUEUES:
            raise LinkError(f"a link holds 1..{MAX_LINK_QUEUES} queue addresses")
        if len({q.mode for q in queues}) != 1:
            raise LinkError("a link's queues must all have the same mode")
        if len({(q.server, q.snd_id) for q in queues}) != len(queues):
            raise LinkError("a link's queues must be distinct")

    @classmethod
    def create(cls, *queues: QueueAddress) -> ConnectionLink:
        """A link of the versions this code speaks."""
        return cls(*SUPPORTED_LINK_VERSIONS, queues)

    @property
    def mode(self) -> QueueMode:
        return self.queues[0].mode

    @property
    def kind(self) -> str:
        """``"invitation"`` (mode messaging) or ``"contact"`` (mode contact)."""
        return _KIND_OF_MODE[self.mode]

    @property
    def agreed_version(self) -> int:
        """The highest version both this code and the link's creator speak."""
        return min(self.max_version, SUPPORTED_LINK_VERSIONS[1])

    def to_uri(self) -> str:
        return _checked_length(f"{_PREFIX}{self.kind}#{b64url(_encoder.encode(self))}")


class LinkData(msgspec.Struct, tag=LINK_DATA_VERSION, **_STRUCT):
    """What a short link resolves to: a connection link, and `user_data` opaque to this layer
    (the chat's group profile and relay links). Encoded as ``[version, link, user_data]``."""

    version: ClassVar[int] = LINK_DATA_VERSION
    link: ConnectionLink
    user_data: Annotated[bytes, msgspec.Meta(max_length=MAX_LINK_DATA)] = b""

    def __post_init__(self) -> None:
        if not isinstance(self.link, ConnectionLink):
            raise LinkError("link data holds a ConnectionLink")
        if not isinstance(self.user_data, bytes) or len(self.user_data) > MAX_LINK_DATA:
            raise LinkError(f"user data is bytes of at most {MAX_LINK_DATA}")


class _Versions(msgspec.Struct, **_STRUCT):
    """The head of a `ConnectionLink`, read first so a future layout fails on its version."""

    min_version: int
    max_version: int


class _DataVersion(msgspec.Struct, **_STRUCT):
    """The head of a `LinkData`: its tag."""

    version: int


# msgspec raises these besides DecodeError: UnicodeDecodeError for a str that is not UTF-8,
# RecursionError for arrays nested past the interpreter's limit (even in skipped fields).
_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

_encoder = msgspec.msgpack.Encoder()
_link_decoder = msgspec.msgpack.Decoder(ConnectionLink)
_versions_decoder = msgspec.msgpack.Decoder(_Versions)
_data_decoder = msgspec.msgpack.Decoder(LinkData)
_data_version_decoder = msgspec.msgpack.Decoder(_DataVersion)


# ---------------------------------------------------------------------- short links


def derive_link_id(key: bytes) -> bytes:
    """The 24-byte link id of a short-link key; one-way, so the server never learns the key."""
    _check_bytes(key, KEY_SIZE, "a short-link key")
    return hkdf(key, _LINK_ID_INFO)[:ID_SIZE]


@dataclass(frozen=True, slots=True)
class ShortLink:
    """A server, the id of link data stored there, and the key that opens it.

    `link_id` must be `derive_link_id(key)`; make one with `generate` or `from_key`.
    """

    server: ServerAddress
    link_id: bytes
    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.server, ServerAddress):
            raise LinkError("a short link's server is a ServerAddress")
        _check_bytes(self.link_id, ID_SIZE, "a link id")
        if derive_link_id(self.key) != self.link_id:
            raise LinkError("the link id does not belong to this key")
        _canonical_server(str(self.server))

    @classmethod
    def generate(cls, server: ServerAddress) -> ShortLink:
        return cls.from_key(server, random_bytes(KEY_SIZE))

    @classmethod
    def from_key(cls, server: ServerAddress, key: bytes) -> ShortLink:
        return cls(server, derive_link_id(key), key)

    def to_uri(self) -> str:
        server = str(self.server).removeprefix(SCHEME)
        return _checked_length(f"{_SHORT_PREFIX}{server}/{b64url(self.link_id)}#{b64url(self.key)}")

    def __repr__(self) -> str:  # the key reads the link data: keep it out of logs
        return f"ShortLink(server={self.server}, link_id={b64url(self.link_id)[:8]}…)"


def encrypt_link_data(short_link: ShortLink, payload: LinkData) -> bytes:
    """The blob to store with `LSET short_link.link_id blob`; at most `MAX_LINK_DATA` bytes."""
    if not isinstance(short_link, ShortLink) or not isinstance(payload, LinkData):
        raise LinkError("encrypt_link_data takes a ShortLink and a LinkData")
    blob = seal(_data_key(short_link), _encoder.encode(payload), short_link.link_id)
    if len(blob) > MAX_LINK_DATA:
        raise LinkError(f"link data of {len(blob)} bytes encrypted; the limit is {MAX_LINK_DATA}")
    return blob


def decrypt_link_data(short_link: ShortLink, blob: bytes) -> LinkData:
    """Open what `LGET` returned; `LinkError` if it is not this link's data or is malformed."""
    if not isinstance(short_link, ShortLink):
        raise LinkError("decrypt_link_data takes a ShortLink")
    if not isinstance(blob, bytes):
        raise LinkError("link data is bytes")
    if len(blob) > MAX_LINK_DATA:
        raise LinkError(f"link data of {len(blob)} bytes; the limit is {MAX_LINK_DATA}")
    try:
        plaintext = open_sealed(_data_key(short_link), blob, short_link.link_id)
    except CryptoError:
        raise LinkError("link data does not open with this link's key") from None
    try:
        version = _data_version_decoder.decode(plaintext).version
    except _DECODE_ERRORS as exc:
        raise LinkError(f"link data is malformed: {_decode_problem(exc, LinkData)}") from None
    if version != LINK_DATA_VERSION:
        raise LinkError(
            f"link data of version {version}; this client reads version {LINK_DATA_VERSION}"
        )
    try:
        return _data_decoder.decode(plaintext)
    except _DECODE_ERRORS as exc:
        raise LinkError(f"link data is malformed: {_decode_problem(exc, LinkData)}") from None


def _data_key(short_link: ShortLink) -> bytes:
    return hkdf(short_link.key, _LINK_DATA_INFO)


# ---------------------------------------------------------------------- parsing


def parse_any(text: str) -> ConnectionLink | ShortLink:
    """A connection link or a short link, whichever `text` is."""
    text = _clean(text)
    if text.startswith(_SHORT_PREFIX):
        return parse_short_link(text)
    return parse_link(text)


def parse_link(text: str) -> ConnectionLink:
    """``duplex:/invitation#…`` or ``duplex:/contact#…``; `LinkError` says why not."""
    text = _clean(text)
    match = _CONNECTION_LINK.fullmatch(text)
    if match is None:
        if text.startswith(_SHORT_PREFIX):
            raise LinkError("a short link: resolve it (parse_short_link, LGET) first")
        raise LinkError(
            f"not a connection link (duplex:/invitation#… or duplex:/contact#…): {text[:40]!r}"
        )
    kind, encoded = match.groups()
    data = _from_b64url(encoded, "link")
    try:
        versions = _versions_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise LinkError(f"malformed {kind} link: {_decode_problem(exc, ConnectionLink)}") from None
    _check_versions(versions.min_version, versions.max_version)
    try:
        link = _link_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise LinkError(f"malformed {kind} link: {_decode_problem(exc, ConnectionLink)}") from None
    if link.kind != kind:
        raise LinkError(f"a {kind} link must hold {kind} queues, not {link.kind} queues")
    return link


def parse_short_link(text: str) -> ShortLink:
    """``duplex:/l/<fingerprint>@<host>:<port>/<link_id>#<key>``; `LinkError` says why not."""
    text = _clean(text)
    match = _SHORT_LINK.fullmatch(text)
    if match is None:
        raise LinkError(
            f"not a short link (duplex:/l/<fingerprint>@host:port/<id>#<key>): {text[:40]!r}"
        )
    server, link_id, key = match.groups()
    return ShortLink(
        _canonical_server(SCHEME + server),
        _from_b64url(link_id, "link id"),
        _from_b64url(key, "link key"),
    )


# ---------------------------------------------------------------------- checks


def _clean(text: object) -> str:
    if not isinstance(text, str):
        raise LinkError(f"a link is text, not {type(text).__name__}")
    if len(text) > MAX_LINK_TEXT:
        raise LinkError(f"a link of {len(text)} characters; the limit is {MAX_LINK_TEXT}")
    return text.strip()


def _checked_length(uri: str) -> str:
    if len(uri) > MAX_LINK_TEXT:
        raise LinkError(f"the link would be {len(uri)} characters; the limit is {MAX_LINK_TEXT}")
    return uri


def _check_versions(min_version: int, max_version: int) -> None:
    # type() rather than isinstance(): a bool is no version
    if not all(type(v) is int and 1 <= v <= _MAX_VERSION for v in (min_version, max_version)):
        raise LinkError(f"link versions are integers 1..{_MAX_VERSION}")
    if min_version > max_version:
        raise LinkError(f"empty link version range {min_version}..{max_version}")
    ours_min, ours_max = SUPPORTED_LINK_VERSIONS
    if max_version < ours_min or min_version > ours_max:
        raise LinkError(
            f"the link speaks versions {min_version}..{max_version}; "
            f"this client speaks {ours_min}..{ours_max}"
        )


def _check_bytes(value: object, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise LinkError(f"{what} is {size} bytes")


def _canonical_server(text: object) -> ServerAddress:
    """The ServerAddress of `text`, which must be exactly its canonical form."""
    if not isinstance(text, str) or len(text) > MAX_SERVER_TEXT:
        raise LinkError(f"a server address is text of at most {MAX_SERVER_TEXT} characters")
    try:
        server = ServerAddress.parse(text)
    except ConfigurationError as exc:
        raise LinkError(f"bad server address in link: {exc.args[0]}") from None
    if str(server) != text:
        raise LinkError(f"server address not in canonical form: {text[:80]!r}")
    return server


def _from_b64url(text: str, what: str) -> bytes:
    """Strict, canonical, unpadded base64url (the stdlib decoder skips stray characters)."""
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise LinkError(f"the {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise LinkError(f"the {what} is not base64url") from None
    if b64url(data) != text:
        raise LinkError(f"the {what} is not canonical base64url")
    return data


# ---------------------------------------------------------------------- decode errors in words

# msgspec's type names and the link's field names, as a person reading the error knows them.
_TYPE_WORDS: Final = {
    "array": "a list",
    "int": "a number",
    "float": "a decimal number",
    "str": "text",
    "bytes": "bytes",
    "object": "a map",
    "null": "nil",
    "bool": "true or false",
}
_FIELD_WORDS: Final = {
    "min_version": "the lowest version",
    "max_version": "the highest version",
    "queues": "the queue list",
    "server": "the server address",
    "snd_id": "the sender id",
    "dh_public": "the public key",
    "mode": "the queue mode",
    "link": "the connection link",
    "user_data": "the user data",
}
_EXPECTED_GOT = re.compile(r"Expected `(\w+)`, got `(\w+)`")
_TOO_FEW_FIELDS = re.compile(r"Expected `array` of at least length (\d+), got (\d+)")


def _decode_problem(exc: BaseException, root: type[msgspec.Struct]) -> str:
    """What is wrong with undecodable link bytes, in words: msgspec says
    ``Expected `array`, got `int` - at `$[2][0]` ``, which means nothing to whoever pasted
    the link; this says ``queue 1 is a number where a list belongs``."""
    if isinstance(exc, UnicodeDecodeError):
        return "it holds text that is not UTF-8"
    if isinstance(exc, RecursionError):
        return "it is nested too deeply to be a link"
    problem, _, path = str(exc).partition(" - at `")
    where = _field_at(path.rstrip("`"), root)
    if problem == "Input data was truncated":
        return "its data ends too early (was the link cut short?)"
    if match := _EXPECTED_GOT.fullmatch(problem):
        expected, got = (_TYPE_WORDS.get(word, word) for word in match.groups())
        return f"{where} is {got} where {expected} belongs"
    if match := _TOO_FEW_FIELDS.fullmatch(problem):
        needed, present = match.groups()
        return f"{where} has {present} fields where at least {needed} belong"
    if problem.startswith("Invalid enum value "):
        return f"{where} is {problem.removeprefix('Invalid enum value ')}, not a known value"
    # Anything else (a length or a range): msgspec's sentence with its type names in words.
    words = re.sub(r"`(\w+)`", lambda m: _TYPE_WORDS.get(m[1], m[1]), problem)
    if words.startswith("Expected "):
        return f"{where} should be {words.removeprefix('Expected ')}"
    return f"{where}: {words[:1].lower()}{words[1:]}"


def _field_at(path: str, root: type[msgspec.Struct]) -> str:
    """``$[2][0][3]`` of a `ConnectionLink` → ``queue 1's queue mode``."""
    where = "the link data" if root is LinkData else "the link"
    kind: msgspec.inspect.Type = msgspec.inspect.type_info(root)
    for index in map(int, re.findall(r"\[(\d+)\]", path)):
        if isinstance(kind, msgspec.inspect.StructType):
            position = index - 1 if kind.tag is not None else index  # the tag comes first
            if position < 0:
                return f"the version of {where}"
            if position >= len(kind.fields):
                return where
            field = kind.fields[position]
            words = _FIELD_WORDS.get(field.name, field.name)
            where = words if where in ("the link", "the link data") else f"{where}, {words}"
            kind = field.type
        elif isinstance(kind, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
            where = f"queue {index + 1}" if where.endswith("queue list") else f"item {index + 1}"
            kind = kind.item_type
        else:
            break
    return where
