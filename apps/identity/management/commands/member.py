"""`manage.py member add <npub> --role member|friend` and `manage.py member remove <npub>`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.identity import services
from apps.identity.models import Role
from apps.identity.services import IdentityError


class Command(BaseCommand):
    help = "Add a person by key with a role, or remove them (ending their sessions and keys)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="add a member or a friend")
        add.add_argument("pubkey", help="npub1… or 64-character hex public key")
        add.add_argument("--role", choices=[Role.MEMBER, Role.FRIEND], default=Role.MEMBER)
        remove = actions.add_parser("remove", help="remove a person at once")
        remove.add_argument("pubkey", help="npub1… or 64-character hex public key")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            pubkey = services.parse_pubkey(options["pubkey"])
            if options["action"] == "add":
                member = services.member_add(pubkey, options["role"])
                self.stdout.write(f"Added {member.npub} as {member.role}.")
            else:
                services.member_remove(pubkey)
                self.stdout.write(f"Removed {options['pubkey'].strip()}.")
        except IdentityError as error:
            raise CommandError(str(error)) from None
