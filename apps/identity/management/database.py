"""What the identity commands check before they touch the database."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.db import DatabaseError, connection

from apps.identity.models import Member

# Who did what, in the audit trail, when it was done from a shell on the node.
SHELL = "shell"


def database_ready() -> None:
    """A sentence instead of a traceback when the node's database is not set up yet."""
    try:
        tables = connection.introspection.table_names()
    except DatabaseError as error:
        raise CommandError(f"The database cannot be opened: {error}") from None
    if Member._meta.db_table not in tables:
        raise CommandError(
            "The database is not set up yet: start the node once (make run), "
            "or run `manage.py migrate`, then try again."
        )
