"""Secrets kept at rest (API keys, prepaid keys, kept tokens), sealed with a key of their own.

The key lives in the data directory, owner-only, apart from the database: a copied database
(a backup, a bug report) does not carry spendable keys.
"""

from __future__ import annotations

import functools
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from sovereign.environment import secret_file


@functools.cache
def _fernet(directory: str) -> Fernet:
    key = secret_file(Path(directory) / "providers.key", lambda: Fernet.generate_key().decode())
    return Fernet(key.encode())


def _box() -> Fernet:
    return _fernet(str(settings.DATA_DIR))


def seal(text: str) -> str:
    return _box().encrypt(text.encode()).decode() if text else ""


def unseal(sealed: str) -> str:
    """The secret, or "" when there is none or it was sealed with another node's key."""
    if not sealed:
        return ""
    try:
        return _box().decrypt(sealed.encode()).decode()
    except InvalidToken:
        return ""
