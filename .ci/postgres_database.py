"""The PostgreSQL database CI's tests connect to: made if missing, its URL printed.

usage: python .ci/postgres_database.py SERVER_URL NAME

SERVER_URL reaches any database of the server (its maintenance database `postgres` by
default in .ci/run); NAME is made there unless it exists. The tests connect to NAME and make
(and drop) a database of their own per test, so NAME only needs to exist. Prints NAME's URL
and exits 0; exits 1 with one line on stderr when the server does not answer or refuses.
"""

from __future__ import annotations

import re
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


def main(server_url: str, name: str) -> int:
    if re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) is None:
        print(f"not a plain database name: {name!r}", file=sys.stderr)
        return 1
    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as server:
            found = server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is None:
                server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"PostgreSQL at {_redacted(server_url)}: {reason}", file=sys.stderr)
        return 1
    print(urlunsplit(urlsplit(server_url)._replace(path=f"/{name}")))
    return 0


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
