"""A real PostgreSQL server from Debian's packages, for the tests that run on it too.

It lives in a temporary directory, listens on 127.0.0.1 only (on a free port) and asks for a
password made for this run; it is stopped and deleted at the end. initdb refuses to run as
root, so under root the server runs as the `postgres` user the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.instances import free_port

SERVER_USER = "postgres"  # the account Debian's postgresql package makes


class PostgresMissing(Exception):
    """No PostgreSQL server programs on this machine; the message says what to install."""


def server_programs() -> Path:
    """The directory holding initdb and pg_ctl: Debian keeps them off PATH, one per version."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    initdb = found[-1] if found else shutil.which("initdb")
    if initdb is None:
        raise PostgresMissing(
            "PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does)."
        )
    return Path(initdb).resolve().parent


class PostgresServer:
    """One PostgreSQL cluster; `database()` makes a fresh, empty database on it."""

    def __init__(self) -> None:
        self.programs = server_programs()
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.as_user: list[str] = []
        self.directory = Path(tempfile.mkdtemp(prefix="sovereign-postgres-"))
        self.data = self.directory / "data"
        try:
            if os.geteuid() == 0:
                self._hand_over_to_server_user()
            self._initdb()
            self._pg_ctl("start", "--wait", "--log", str(self.directory / "server.log"),
                         "--options", self._server_options())  # fmt: skip
        except BaseException:
            self.stop()
            raise
        self._made = 0

    def _hand_over_to_server_user(self) -> None:
        try:
            account = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresMissing(
                f"Running as root, and there is no {SERVER_USER!r} user to run PostgreSQL as."
            ) from None
        os.chown(self.directory, account.pw_uid, account.pw_gid)
        self.as_user = ["runuser", "-u", SERVER_USER, "--"]

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            [*self.as_user, *argv], cwd=self.directory, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            log = self.directory / "server.log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(f"{Path(argv[0]).name} failed: {done.stderr}\n{detail}")

    def _initdb(self) -> None:
        password_file = self.directory / "password"
        password_file.write_text(self.password)
        if self.as_user:
            shutil.chown(password_file, SERVER_USER)
        try:
            # The password guards TCP; the unix socket, only in this directory, is the
            # server user's own (peer), which nothing in the tests uses.
            self._run(str(self.programs / "initdb"), "--pgdata", str(self.data),
                      "--username", "postgres", "--pwfile", str(password_file),
                      "--auth-host", "scram-sha-256", "--auth-local", "peer",
                      "--encoding", "UTF8", "--locale", "C.UTF-8", "--no-instructions")  # fmt: skip
        finally:
            password_file.unlink()

    def _server_options(self) -> str:
        return " ".join([
            "-c listen_addresses=127.0.0.1", f"-c port={self.port}",
            f"-c unix_socket_directories={self.directory}",
            # The 50 concurrent payers each hold a connection, beside the test's own.
            "-c max_connections=120",
        ])  # fmt: skip

    def _pg_ctl(self, *argv: str) -> None:
        self._run(str(self.programs / "pg_ctl"), "--pgdata", str(self.data), *argv)

    def url(self, name: str) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{name}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        self._made += 1
        name = f"sovereign_{self._made}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "--wait", "--mode", "fast")
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def default_database(url: str) -> Iterator[None]:
    """Django's default database is the one at `url` until the block ends, in every thread:
    the code under test reaches it as `connection`, as on a node configured with that URL."""
    import dj_database_url
    from django.db import connections

    kept = connections.settings["default"]
    _forget_default(connections)
    wanted = {"default": dict(dj_database_url.parse(url, conn_max_age=0))}
    connections.settings["default"] = connections.configure_settings(wanted)["default"]
    try:
        yield
    finally:
        _forget_default(connections)
        connections.settings["default"] = kept


def _forget_default(connections: object) -> None:
    """Close this thread's default connection, so the next use opens one with the settings."""
    try:
        connections["default"].close()  # type: ignore[index]
        del connections["default"]  # type: ignore[attr-defined]
    except AttributeError:
        pass
