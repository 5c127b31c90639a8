"""`manage.py apikey create <npub> --name NAME`: print a new API key once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.identity import services
from apps.identity.management.database import SHELL, database_ready
from apps.identity.models import Member
from apps.identity.services import IdentityError


class Command(BaseCommand):
    help = "Make an API key for a member and print it (it is shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="make a key")
        create.add_argument("pubkey", help="npub1… or 64-character hex public key")
        create.add_argument("--name", required=True, help="what the key is for")

    def handle(self, *args: Any, **options: Any) -> None:
        database_ready()
        try:
            pubkey = services.parse_pubkey(options["pubkey"])
            member = Member.objects.filter(pubkey=pubkey).first()
            if member is None:
                raise IdentityError("That key is not a member of this node.")
            _, key = services.apikey_create(member, options["name"], actor=SHELL)
        except IdentityError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(key)
