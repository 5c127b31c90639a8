"""`manage.py sharing sell|stop|friend|status`: sharing from a shell.

    sharing sell MODEL --price-sat N [--per-1k-tokens --max-request-sat M]
    sharing stop MODEL
    sharing friend NPUB --models M [M ...] --daily-requests N [--daily-tokens N]
                        [--outside-cap-sat N]
    sharing friend NPUB --remove
    sharing status [--json]

Bad input is a CommandError naming what is wrong, and changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.identity.models import Member, Role
from apps.identity.services import IdentityError, parse_pubkey
from apps.sharing import services
from apps.sharing.services import SharingError, SharingStatus

ACTOR = "owner:shell"


class Command(BaseCommand):
    help = "Sell answers of local models to strangers, share models with friends, see both."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        sell = actions.add_parser("sell", help="put a local model on sale (or change its price)")
        sell.add_argument("model")
        sell.add_argument("--price-sat", type=int, required=True, help="per request, or per 1k")
        sell.add_argument("--per-1k-tokens", action="store_true", help="price per 1,000 tokens")
        sell.add_argument("--max-request-sat", type=int, help="per 1k tokens: most one request")
        stop = actions.add_parser("stop", help="take a model off sale")
        stop.add_argument("model")
        friend = actions.add_parser("friend", help="share models with a friend, within a quota")
        friend.add_argument("pubkey", help="npub1… or 64-character hex public key")
        friend.add_argument("--models", nargs="+", default=[], metavar="MODEL")
        friend.add_argument("--daily-requests", type=int)
        friend.add_argument("--daily-tokens", type=int, help="default: no token limit")
        friend.add_argument(
            "--outside-cap-sat", type=int, help="for outside models: the friend's sats a day"
        )
        friend.add_argument("--remove", action="store_true", help="share nothing more with them")
        status = actions.add_parser("status", help="offers, friends' use today, strangers' sales")
        status.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "sell":
                self._sell(options)
            elif action == "stop":
                services.offer_stop(options["model"], actor=ACTOR)
                self.stdout.write(f"{options['model']} is no longer on sale.")
            elif action == "friend":
                self._friend(options)
            else:
                self._status(services.status(), as_json=options["json"])
        except (SharingError, IdentityError) as error:
            raise CommandError(str(error)) from None

    def _sell(self, options: dict[str, Any]) -> None:
        offer = services.offer_set(
            options["model"],
            options["price_sat"],
            per_1k_tokens=options["per_1k_tokens"],
            max_request_sat=options["max_request_sat"],
            actor=ACTOR,
        )
        self.stdout.write(f"{offer.model} is on sale: {_price(offer.price_msat, offer)}.")

    def _friend(self, options: dict[str, Any]) -> None:
        friend = _friend(options["pubkey"])
        if options["remove"]:
            if options["models"] or options["daily_requests"] is not None:
                raise CommandError("--remove takes no models or quota.")
            services.share_remove(friend, actor=ACTOR)
            self.stdout.write(f"Nothing is shared with {friend.npub} any more.")
            return
        if not options["models"] or options["daily_requests"] is None:
            raise CommandError("Give --models and --daily-requests (or --remove).")
        share = services.share_set(
            friend,
            options["models"],
            options["daily_requests"],
            options["daily_tokens"],
            actor=ACTOR,
            outside_cap_sat=options["outside_cap_sat"],
        )
        tokens = "" if share.daily_tokens is None else f" and {share.daily_tokens} tokens"
        self.stdout.write(
            f"Shared with {friend.npub}: {', '.join(share.model_names)}; "
            f"{share.daily_requests} requests{tokens} a day."
        )

    def _status(self, status: SharingStatus, *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(status.as_dict(), indent=2))
            return
        write = self.stdout.write
        write("On sale to strangers:" if status.offers else "Nothing on sale to strangers.")
        for offer in status.offers:
            write(f"  {offer.model}\t{_price(offer.price_msat, offer)}")
        write("Shared with friends:" if status.friends else "Nothing shared with friends.")
        for friend in status.friends:
            tokens = f"\t{friend.tokens_today}" + (
                f"/{friend.daily_tokens} tokens" if friend.daily_tokens is not None else " tokens"
            )
            write(
                f"  {friend.npub}\t{', '.join(friend.models)}\t"
                f"{friend.requests_today}/{friend.daily_requests} requests{tokens} today"
            )
        strangers = status.strangers
        write(
            f"Strangers: answers sold: {strangers.sales} ({strangers.sales_today} today), for "
            f"{strangers.sold_msat // 1000} sat; paid balances: {strangers.balances}, holding "
            f"{strangers.unspent_msat // 1000} sat unspent."
        )
        write(f"Friends' quotas reset at {status.resets_at:%Y-%m-%d %H:%M} UTC.")


def _friend(pubkey: str) -> Member:
    hex_key = parse_pubkey(pubkey)
    member = Member.objects.filter(pubkey=hex_key).first()
    if member is None:
        raise CommandError("That key is not a member of this node: add it with `member add`.")
    if member.role != Role.FRIEND:
        raise CommandError(f"That key is a {member.role}, not a friend: members use every model.")
    return member


def _price(price_msat: int, offer: Any) -> str:
    if not offer.per_1k_tokens:
        return f"{price_msat // 1000} sat a request"
    most = (offer.max_request_msat or 0) // 1000
    return f"{price_msat // 1000} sat per 1,000 tokens, at most {most} sat a request"
