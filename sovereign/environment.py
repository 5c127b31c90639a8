"""Typed readers for environment variables.

Each reader returns the default when the variable is unset or empty, and raises
ImproperlyConfigured naming the variable when the value cannot be used, so a bad
setting stops Sovereign at start with a message that says which one to fix.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def env_str(name: str, default: str) -> str:
    return _raw(name) or default


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use true or false.")


def env_int(name: str, default: int, *, minimum: int, maximum: int) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
    if not minimum <= number <= maximum:
        raise ImproperlyConfigured(f"{name}={number} is out of range ({minimum}..{maximum}).")
    return number


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_raw(name) or default).upper()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_origins(name: str, default: list[str]) -> list[str]:
    """Origins such as http://umbrel.local:3410: a scheme and a host, no path."""
    origins = env_list(name, default)
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImproperlyConfigured(
                f"{name} has {origin!r}: each origin must look like http://host:port."
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ImproperlyConfigured(f"{name} has {origin!r}: an origin has no path.")
    return [origin.rstrip("/") for origin in origins]


def env_relays(name: str, default: list[str]) -> list[str]:
    """Nostr relay addresses: ws:// or wss:// URLs."""
    relays = env_list(name, default)
    for relay in relays:
        parts = urlsplit(relay)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ImproperlyConfigured(f"{name} has {relay!r}: a relay looks like wss://host.")
    return relays


def env_redis_url(name: str) -> str:
    """A Redis URL, or "" when Redis is not used."""
    value = _raw(name)
    if value is None:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ImproperlyConfigured(f"{name}={value!r} is not a Redis URL: use redis://host:6379/0.")
    return value


def env_lightning_rest_url(name: str) -> str:
    """CLNRest's address (`https://host:port`, no path), or "" when the socket is used."""
    value = _raw(name)
    if value is None:
        return ""
    parts = urlsplit(value)
    well_formed = parts.scheme in ("https", "http") and parts.hostname and _port_valid(parts)
    if not well_formed or parts.path.strip("/"):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not CLNRest's address: use https://host:port, with no path."
        )
    return value.rstrip("/")


def _port_valid(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018  (reading it raises ValueError for a port out of range)
    except ValueError:
        return False
    return True


POSTGRESQL_SCHEMES = ("postgresql", "postgres")


def env_database_url(name: str) -> str:
    """A PostgreSQL URL, or "" for the SQLite file in the data directory."""
    value = _raw(name)
    if value is None:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in POSTGRESQL_SCHEMES or not parts.path.strip("/"):
        raise ImproperlyConfigured(
            f"{name} is not a PostgreSQL URL: use postgresql://user:password@host:5432/name."
        )
    return value


def env_directory(name: str, default: Path) -> Path:
    """A directory Sovereign may write to, created (owner-only) if missing."""
    value = _raw(name)
    directory = Path(value).expanduser().resolve() if value else default
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ImproperlyConfigured(
            f"{name}={str(directory)!r} cannot be created: {error}"
        ) from None
    if not os.access(directory, os.W_OK):
        raise ImproperlyConfigured(f"{name}={str(directory)!r} is not writable.")
    return directory


def files_owner_only() -> None:
    """Every file and directory this process creates from now on is the owner's alone."""
    os.umask(0o077)


def directory_tighten(directory: Path) -> None:
    """Make an existing directory and all in it owner-only (made by an older version)."""
    for path in [directory, *directory.rglob("*")]:
        if path.is_symlink():
            continue  # a link's own mode means nothing; its target may be anyone's file
        mode = path.lstat().st_mode & 0o777
        tight = mode & 0o700
        if mode != tight:
            path.chmod(tight)


def secret_key(name: str, key_file: Path) -> str:
    """The secret key from the environment, or one generated once and kept in key_file."""
    value = _raw(name)
    if value is not None:
        if len(value) < 32:
            raise ImproperlyConfigured(f"{name} is too short: use at least 32 characters.")
        return value
    return secret_file(key_file, lambda: secrets.token_urlsafe(50))


def secret_file(path: Path, make_secret: Callable[[], str]) -> str:
    """The secret kept in path (owner-only), made once with make_secret if it is missing."""
    if not path.exists():
        candidate = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(make_secret())
        try:
            # A hard link appears whole or not at all: when web and worker start together,
            # exactly one secret wins and both read it.
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text().strip()
