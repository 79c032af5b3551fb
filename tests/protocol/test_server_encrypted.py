"""A queue server on an encrypted store (SQLCipher): its TLS identity key and its queues are
unreadable at rest, it keeps its address across restarts, and a wrong passphrase is refused
before anything is changed; `duplex server --passphrase-file` does the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from protocol.errors import WrongPassphrase
from protocol.server import QueueServer

SECRET = "server passphrase"


def _at_rest(path: Path) -> bytes:
    files = (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
    return b"".join(p.read_bytes() for p in files if p.exists())


def test_an_encrypted_server_hides_its_key_and_keeps_its_address(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    url = f"sqlite:///{path}"
    server = QueueServer.start(url, passphrase=SECRET)
    fingerprint = str(server.address).partition("@")[0]
    certificate, key = server.store.load_identity()
    server.store.scrub()  # the WAL checkpoint runs keyed on an encrypted store
    server.stop()

    stored = _at_rest(path)
    assert b"PRIVATE KEY" not in stored and key not in stored
    assert certificate not in stored
    with pytest.raises(WrongPassphrase):
        QueueServer.start(url, passphrase="not it")
    again = QueueServer.start(url, passphrase=SECRET)
    try:
        # the same identity (certificate fingerprint), read back through the key
        assert str(again.address).partition("@")[0] == fingerprint
    finally:
        again.stop()


def test_duplex_server_reads_its_passphrase_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text(SECRET + "\n")
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    command = [sys.executable, "-m", "actors.cli", "server", "--db", db, "--port", "0"]
    with subprocess.Popen(
        [*command, "--passphrase-file", str(secret)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            line = process.stdout.readline()
            assert line.startswith("duplex://"), line or process.stderr.read()
        finally:
            process.terminate()
            process.wait(timeout=30)
    empty = tmp_path / "empty"
    empty.write_text("")
    done = subprocess.run(
        [*command, "--passphrase-file", str(empty)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "passphrase file" in done.stderr
    assert "Traceback" not in done.stderr
