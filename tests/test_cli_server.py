"""`duplex server` as a new user meets it: every bad option refused in one line, a port in
use said plainly with no database file left behind, and a start-up that says where the
server is, where its database is and how to stop it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.cli import main
from protocol.address import ServerAddress
from protocol.errors import ConfigurationError
from protocol.server import QueueServer

DUPLEX = [sys.executable, "-m", "actors.cli"]
START_TIMEOUT_S = 60


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--port", "99999", "a port is 1..65535"),
        ("--port", "70000", "a port is 1..65535"),
        ("--port", "-1", "a port is 1..65535"),
        ("--port", "http", "a port is a number"),
        ("--quota", "0", "at least 1"),
        ("--quota", "-5", "at least 1"),
        ("--quota-bytes", "0", "at least 1"),
        ("--store-bytes", "1.5", "a whole number"),
        ("--new-queues", "0", "at least 1"),
        ("--auth-failures", "-1", "at least 1"),
        ("--message-ttl", "0", "more than 0"),
        ("--message-ttl", "nan", "more than 0"),
        ("--new-queue-window", "-3", "more than 0"),
        ("--auth-failure-window", "inf", "more than 0"),
    ],
)
def test_a_bad_option_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, words: str
) -> None:
    db = tmp_path / "server.db"
    with pytest.raises(SystemExit) as exited:
        main(["server", "--db", f"sqlite:///{db}", option, value])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"duplex server: argument {option}: "), err
    assert words in err
    assert not db.exists()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port that another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_port_in_use_is_one_line_and_leaves_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], busy_port: int
) -> None:
    db = tmp_path / "server.db"
    code = main(["server", "--db", f"sqlite:///{db}", "--port", str(busy_port)])
    assert code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        f"duplex server: CONFIG: cannot listen on 127.0.0.1:{busy_port}: the port is in use "
        "(another server? --port chooses another)"
    ]
    assert list(tmp_path.iterdir()) == [], "a database file was made"


def test_an_embedded_server_on_a_port_in_use_names_the_os_error(
    tmp_path: Path, busy_port: int
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        QueueServer.start(f"sqlite:///{tmp_path}/server.db", port=busy_port)
    message = str(caught.value)
    assert message.endswith("Address already in use"), message
    assert "ExceptionGroup" not in message and "OSError" not in message


def test_an_unknown_host_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "server.db"
    assert main(["server", "--db", f"sqlite:///{db}", "--host", "no-such-host.invalid"]) == 1
    _, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("duplex server: CONFIG: cannot listen on no-such-host.invalid:5223")
    assert not db.exists()


def test_help_explains_host_and_port_and_shows_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["server", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--host HOST interface to listen on" in text
    assert "(default: 127.0.0.1)" in text
    assert "--port PORT TCP port to listen on (0: any free port) (default: 5223)" in text
    assert "--public-host PUBLIC_HOST the host name or IP address peers dial" in text
    assert "(default: 128)" in text  # the limits' defaults too
    assert "(default: None)" not in text


def _start_up(tmp_path: Path, *options: str) -> list[str]:
    """Run `duplex server` until it has said everything it says at start, then Ctrl-C it."""
    server = subprocess.Popen(
        [*DUPLEX, "server", "--db", f"sqlite:///{tmp_path}/server.db", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert server.stdout is not None
    lines: list[str] = []
    try:
        while not lines or "Ctrl-C" not in lines[-1]:
            line = server.stdout.readline()
            assert line, (
                f"it stopped early: {lines} {server.stderr.read() if server.stderr else ''}"
            )
            lines.append(line.rstrip("\n"))
        server.send_signal(signal.SIGINT)
        assert server.wait(START_TIMEOUT_S) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.stderr is not None and server.stderr.read() == ""
    return lines


def test_start_up_says_the_address_the_database_and_how_to_stop(tmp_path: Path) -> None:
    lines = _start_up(tmp_path)
    address = ServerAddress.parse(lines[0])  # the address alone on the first line
    assert address.host == "127.0.0.1"
    assert f"  listening on 127.0.0.1:{address.port}" in lines
    assert f"  database: {tmp_path / 'server.db'}" in lines
    assert lines[-1] == "  Ctrl-C stops it"


def test_public_host_goes_into_the_printed_address(tmp_path: Path) -> None:
    lines = _start_up(tmp_path, "--host", "127.0.0.1", "--public-host", "chat.example.org")
    address = ServerAddress.parse(lines[0])
    assert address.host == "chat.example.org"
    assert f"  listening on 127.0.0.1:{address.port}" in lines


def test_a_wildcard_host_without_public_host_is_said_to_be_undialable(tmp_path: Path) -> None:
    lines = _start_up(tmp_path, "--host", "0.0.0.0")
    assert any("0.0.0.0 is no address a peer can dial" in line for line in lines), lines
    assert any("--public-host" in line for line in lines)
