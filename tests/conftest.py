"""Shared fixtures: a fresh database URL per test (SQLite always, PostgreSQL on request) and
queue servers on loopback with SQLite files (`start_server`).

Set DUPLEX_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test) to run the
PostgreSQL cases; each test then gets its own database, created here and dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from protocol.server import QueueServer

POSTGRES_ENV = "DUPLEX_TEST_POSTGRES_URL"


def postgres_admin_url() -> str | None:
    """The server URL from the environment, or None when PostgreSQL cases should be skipped."""
    return os.environ.get(POSTGRES_ENV) or None


_NO_POSTGRES = pytest.mark.skipif(
    postgres_admin_url() is None, reason=f"PostgreSQL cases need {POSTGRES_ENV} set"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped (connections and all) after the test."""
    admin_url = postgres_admin_url()
    if admin_url is None:
        pytest.skip(f"PostgreSQL cases need {POSTGRES_ENV} set")
    import psycopg

    name = f"duplex_t_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        # FORCE ends connections a failed test left open in some pool.
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=_NO_POSTGRES)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for a fresh database of each kind; close what you open before the test ends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'duplex.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., QueueServer]]:
    """Start queue servers on SQLite files in tmp_path; all are stopped after the test."""
    servers: list[QueueServer] = []

    def start(name: str = "server", port: int = 0, **kwargs: object) -> QueueServer:
        server = QueueServer.start(f"sqlite:///{tmp_path / name}.db", port=port, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
