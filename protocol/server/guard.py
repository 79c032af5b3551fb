"""`FrameGuard`: refuses an oversized websocket frame from its header, before its body; sans-io.

trio-websocket (and wsproto under it) take a frame header's length on trust and read the
body into memory, checking the message size only as the pieces arrive: a header that claims
2⁶³ bytes is answered only after `max_message_size` bytes have been received. The guard sits
on the bytes a client sends, in front of the websocket: it lets the HTTP upgrade request
through (at most `max_request` bytes of it), then follows the frames — reading each header
and skipping its payload without keeping any of it — and raises `FrameRefused` as soon as
a header claims more than `max_frame` bytes, or a request runs too long. The server then
closes the connection before a byte of the body is read.

Must not: buffer payloads, or decide anything about a frame's content (wsproto does that).
"""

from __future__ import annotations

from typing import Final

_HEADER_END: Final = b"\r\n\r\n"


class FrameRefused(Exception):
    """The client announced a frame (or a request) above the limit."""


class FrameGuard:
    """Follows the client→server byte stream; `feed(data)` raises `FrameRefused`."""

    __slots__ = ("_header", "_in_request", "_request_bytes", "_skip", "max_frame", "max_request")

    def __init__(self, max_frame: int, max_request: int = 16 * 1024) -> None:
        self.max_frame = max_frame
        self.max_request = max_request
        self._in_request = True
        self._request_bytes = 0
        self._header = bytearray()  # the part of a frame header received so far
        self._skip = 0  # payload bytes of the current frame still to pass

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if self._in_request:
            view = self._request(view)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            view = self._frame_header(view)

    def _request(self, view: memoryview) -> memoryview:
        # The end marker may straddle two reads: look at the last bytes of the previous one.
        seen = min(self._request_bytes, len(_HEADER_END) - 1)
        tail = self._header[-seen:] if seen else b""
        data = bytes(tail) + bytes(view)
        end = data.find(_HEADER_END)
        if end < 0:
            self._request_bytes += len(view)
            if self._request_bytes > self.max_request:
                raise FrameRefused(f"upgrade request longer than {self.max_request} bytes")
            self._header[:] = data[-(len(_HEADER_END) - 1) :]
            return memoryview(b"")
        used = end + len(_HEADER_END) - len(tail)
        if self._request_bytes + used > self.max_request:
            raise FrameRefused(f"upgrade request longer than {self.max_request} bytes")
        self._in_request = False
        self._header.clear()
        return view[used:]

    def _frame_header(self, view: memoryview) -> memoryview:
        header = self._header
        for _ in range(2):  # the first two bytes, then the rest they announce
            need = 2 if len(header) < 2 else _header_size(header[1])
            take = min(need - len(header), len(view))
            header += view[:take]
            view = view[take:]
            if len(header) < need:
                return view  # the rest comes with the next read
        length = header[1] & 0x7F
        if length == 126:
            length = int.from_bytes(header[2:4], "big")
        elif length == 127:
            length = int.from_bytes(header[2:10], "big")
        if length > self.max_frame:
            raise FrameRefused(f"a frame of {length} bytes is above {self.max_frame}")
        header.clear()
        self._skip = length
        return view


def _header_size(second_byte: int) -> int:
    """A frame header's size from its second byte: RFC 6455 5.2."""
    length = second_byte & 0x7F
    extended = 2 if length == 126 else 8 if length == 127 else 0
    return 2 + extended + (4 if second_byte & 0x80 else 0)
