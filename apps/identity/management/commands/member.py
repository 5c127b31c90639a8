"""`manage.py member add|set-role|remove <npub>`: people on the node, from a shell."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from nostr_sdk import PublicKey

from apps.identity import services
from apps.identity.models import Role
from apps.identity.services import IdentityError


def member_npub(pubkey: str) -> str:
    return str(PublicKey.parse(pubkey).to_bech32())


class Command(BaseCommand):
    help = "Add a person by key with a role, or remove them (ending their sessions and keys)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="add a member or a friend")
        add.add_argument("pubkey", help="npub1… or 64-character hex public key")
        add.add_argument("--role", choices=[Role.MEMBER, Role.FRIEND], default=Role.MEMBER)
        remove = actions.add_parser("remove", help="remove a person at once")
        remove.add_argument("pubkey", help="npub1… or 64-character hex public key")
        set_role = actions.add_parser("set-role", help="make a person a member or a friend")
        set_role.add_argument("pubkey", help="npub1… or 64-character hex public key")
        set_role.add_argument("--role", choices=[Role.MEMBER, Role.FRIEND], required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            pubkey = services.parse_pubkey(options["pubkey"])
            if options["action"] == "add":
                member = services.member_add(pubkey, options["role"])
                self.stdout.write(f"Added {member.npub} as {member.role}.")
            elif options["action"] == "set-role":
                member = services.member_set_role(pubkey, options["role"])
                self.stdout.write(f"{member.npub} is now a {member.role}.")
            else:
                services.member_remove(pubkey)
                self.stdout.write(f"Removed {member_npub(pubkey)}.")
        except IdentityError as error:
            raise CommandError(str(error)) from None
