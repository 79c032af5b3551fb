"""A trio-websocket echo server run in a child process by `bench.limits`.

Run: ``python -m bench._echo [CERTFILE KEYFILE]``. It listens on two loopback ports chosen by
the OS, one plain ``ws`` and, when a certificate and key (PEM files) are given, one ``wss``,
and prints one line on stdout: ``<ws port> <wss port>`` (``0`` for no wss). Every connection
gets every message it sends back unchanged, one at a time, until it closes.

The server stops when its stdin reaches end of file: the parent closes the pipe to stop it,
and if the parent dies the kernel closes the pipe for it, so the child never outlives the
bench. Ctrl-C is ignored here (the terminal sends it to the whole process group); the parent
handles it and then closes the pipe.
"""

from __future__ import annotations

import signal
import ssl
import sys
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, WebSocketServer, serve_websocket

MAX_MESSAGE_SIZE = 1 << 20  # far above the bench's 256-byte messages
HOST = "127.0.0.1"


async def _echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


def _server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def _wait_for_eof() -> None:
    stdin = sys.stdin.buffer
    while stdin.read(4096):
        pass


async def _serve(certfile: str | None, keyfile: str | None) -> None:
    async with trio.open_nursery() as nursery:
        listen = partial(serve_websocket, _echo, HOST, 0, max_message_size=MAX_MESSAGE_SIZE)
        plain: WebSocketServer = await nursery.start(partial(listen, None))
        tls_port = 0
        if certfile is not None and keyfile is not None:
            tls: WebSocketServer = await nursery.start(
                partial(listen, _server_context(certfile, keyfile))
            )
            tls_port = tls.port
        print(plain.port, tls_port, flush=True)
        await trio.to_thread.run_sync(_wait_for_eof, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (0, 2):
        print("usage: python -m bench._echo [CERTFILE KEYFILE]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    certfile, keyfile = (args[0], args[1]) if args else (None, None)
    trio.run(_serve, certfile, keyfile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
