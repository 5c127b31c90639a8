"""`manage.py claim <npub>`: make that key the owner, while the node has none."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.identity import services
from apps.identity.management.database import SHELL, database_ready
from apps.identity.services import IdentityError


class Command(BaseCommand):
    help = "Make this key (npub or hex) the node's owner. Only while the node is unclaimed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("pubkey", help="npub1… or 64-character hex public key")

    def handle(self, *args: Any, **options: Any) -> None:
        database_ready()
        try:
            owner = services.node_claim(services.parse_pubkey(options["pubkey"]), actor=SHELL)
        except IdentityError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"{owner.npub} now owns this node.")
