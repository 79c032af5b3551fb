"""Logging as a program embedding duplex and a user of `duplex -v` see it: nothing printed
unless the program set logging up, and every record's structured fields shown with -v."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from actors.cli import FieldsFormatter

# A kernel runtime that loses a message: the directory logs a dead letter (a WARNING).
DEAD_LETTER = textwrap.dedent(
    """
    {set_up}
    from actors.kernel import Actor, Runtime, virtual_supervisor_spec

    class Echo(Actor):
        def receive(self, message):
            return message

    with Runtime.start([virtual_supervisor_spec("echo", Echo)]) as runtime:
        print("delivered" if runtime.tell("client/nowhere/x", "hi") else "lost")
    """
)


def _embed(set_up: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DEAD_LETTER.format(set_up=set_up)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_program_without_logging_set_up_gets_nothing_on_stderr() -> None:
    done = _embed(set_up="")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "lost\n"
    assert done.stderr == ""  # was a bare "dead letter"


def test_a_program_with_logging_set_up_reads_what_was_lost_where() -> None:
    done = _embed(set_up="import logging; logging.basicConfig()")
    assert done.returncode == 0, done.stderr
    assert "dead letter: str to client/nowhere/x (no actor at this address)" in done.stderr


def test_the_verbose_formatter_appends_a_records_fields() -> None:
    record = logging.makeLogRecord(
        {"msg": "dead letter", "levelname": "WARNING", "name": "k", "address": "client/a"}
    )
    record.reason = "gone"
    line = FieldsFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == "WARNING k: dead letter [address='client/a' reason='gone']"


def test_the_verbose_formatter_keeps_a_traceback_below_the_fields() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.makeLogRecord(
            {"msg": "crashed", "exc_info": sys.exc_info(), "address": "client/a"}
        )
    head, *rest = FieldsFormatter("%(message)s").format(record).splitlines()
    assert head == "crashed [address='client/a']"
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: boom"


def test_duplex_verbose_shows_the_fields_of_log_records(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "-v", "server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert server.stdout is not None and server.stderr is not None
    address = server.stdout.readline().strip()
    server.send_signal(signal.SIGINT)
    _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert f"queue server listening [address='{address}']" in err, err
