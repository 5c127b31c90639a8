"""`manage.py member add|set-role|remove <npub>`, `member list`: people, from a shell."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from nostr_sdk import PublicKey

from apps.identity import services
from apps.identity.management.database import SHELL, database_ready
from apps.identity.models import Member
from apps.identity.services import IdentityError

ROLES = ["member", "friend"]
ROLE_HELP = "member (the household: chat and models) or friend (API keys only, for now)"


def member_npub(pubkey: str) -> str:
    return str(PublicKey.parse(pubkey).to_bech32())


class Command(BaseCommand):
    help = "List, add, change or remove people by key (removal ends their sessions and keys)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("list", help="everyone on the node, with their role")
        add = actions.add_parser("add", help="add a member or a friend")
        add.add_argument("pubkey", help="npub1… or 64-character hex public key")
        add.add_argument("--role", choices=ROLES, default="member", help=ROLE_HELP)
        remove = actions.add_parser("remove", help="remove a person at once")
        remove.add_argument("pubkey", help="npub1… or 64-character hex public key")
        set_role = actions.add_parser("set-role", help="make a person a member or a friend")
        set_role.add_argument("pubkey", help="npub1… or 64-character hex public key")
        set_role.add_argument("--role", choices=ROLES, required=True, help=ROLE_HELP)

    def handle(self, *args: Any, **options: Any) -> None:
        database_ready()
        if options["action"] == "list":
            self._list()
            return
        try:
            self._change(options["action"], services.parse_pubkey(options["pubkey"]), options)
        except IdentityError as error:
            raise CommandError(str(error)) from None

    def _list(self) -> None:
        people = Member.objects.order_by("joined_at")
        if not people:
            self.stdout.write("Nobody yet: claim the node first.")
        for person in people:
            name = f"  {person.name}" if person.name else ""
            self.stdout.write(f"{person.npub}  {person.role:<6}  {person.joined_at:%Y-%m-%d}{name}")

    def _change(self, action: str, pubkey: str, options: dict[str, Any]) -> None:
        if action == "add":
            member = services.member_add(pubkey, options["role"], actor=SHELL)
            self.stdout.write(f"Added {member.npub} as {member.role}.")
        elif action == "set-role":
            member = services.member_set_role(pubkey, options["role"], actor=SHELL)
            self.stdout.write(f"{member.npub} is now a {member.role}.")
        else:
            services.member_remove(pubkey, actor=SHELL)
            self.stdout.write(f"Removed {member_npub(pubkey)}.")
