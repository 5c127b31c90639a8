"""Being found on Nostr: the offer published to the household's relays, signed with the node's
key, and withdrawn when selling stops.

    listing_set(urls, actor) -> Listing   where strangers reach the node (the `u` tags)
    announce(actor) -> Outcome            a Routstr provider announcement (kind 38421) and a
                                          NIP-89 handler event (kind 31990), both addressable
    withdraw(actor) -> Outcome            a NIP-09 deletion (kind 5) naming both
    listing_refresh() -> Outcome | None   announced again after the offers changed (or
                                          withdrawn when nothing is left on sale)
    listing_refresh_soon()                the same, in a Celery worker

The announcement follows routstr-core's listing (`d`, `u` per URL, `version`; content the
provider's name and about as JSON), with the models on sale and their prices in sats in
Routstr's `sats_pricing` shape (sats per token, `max_cost` per request), so Routstr's clients
read it unchanged. Being addressable, announcing again replaces the events on the relays.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from nostr_sdk import Event, EventBuilder, Keys, Kind, Tag, Timestamp

from apps.audit.services import audit_record
from apps.identity import services as identity
from apps.identity.backends import relays
from apps.sharing.models import Listing, Offer

log = logging.getLogger(__name__)

PROVIDER_KIND = 38421  # Routstr's provider announcement
HANDLER_KIND = 31990  # NIP-89 handler information
DELETION_KIND = 5  # NIP-09
MAX_URLS = 5
MAX_URL_CHARS = 300
PUBLISH_SECONDS = 10.0
SYSTEM_ACTOR = "sharing"  # who refreshes the announcement when offers change
NAME = "Sovereign"
ABOUT = (
    "A household's Sovereign node selling answers from its own local models: "
    "OpenAI-compatible /v1/chat/completions, paid per request over Lightning "
    "(L402 or MPP, or an sk- key bought with an invoice)."
)


class ListingError(Exception):
    """The listing cannot be changed or published as asked; nothing changed."""


@dataclass(frozen=True)
class Outcome:
    """Events sent to the relays: their ids, the relays that took every one, and why others
    did not."""

    event_ids: list[str]
    accepted: tuple[str, ...]
    refused: dict[str, str] = field(default_factory=dict)


def listing() -> Listing:
    found, _ = Listing.objects.get_or_create(pk=1)
    return found


def is_announced(row: Listing) -> bool:
    """Whether the offer is on the relays now (as far as the node last published)."""
    return bool(row.announced_ids) and (
        row.withdrawn_at is None
        or (row.announced_at is not None and row.announced_at > row.withdrawn_at)
    )


def provider_id() -> str:
    """The `d` tag: stable for this node, as Routstr derives its fallback from the key."""
    return str(identity.node_keys().public_key().to_hex())[:12]


# --- the owner's choices ----------------------------------------------------------------


def listing_set(urls: list[str], actor: str) -> Listing:
    """Where strangers reach the node: http(s) URLs or .onion addresses, at most five."""
    checked = _checked_urls(urls)
    with transaction.atomic():
        row = listing()
        row.urls = checked
        row.save(update_fields=["urls"])
        audit_record("listing_set", actor=actor, detail=" ".join(checked) or "no address")
    if is_announced(row):
        transaction.on_commit(listing_refresh_soon)
    return row


def _checked_urls(urls: list[str]) -> list[str]:
    texts = [text.strip() for text in urls if text.strip()]
    if len(texts) > MAX_URLS:
        raise ListingError(f"At most {MAX_URLS} addresses; {len(texts)} were given.")
    checked: list[str] = []
    for text in texts:
        url = _checked_url(text)
        if url not in checked:
            checked.append(url)
    return checked


def _checked_url(text: str) -> str:
    if len(text) > MAX_URL_CHARS:
        raise ListingError(f"An address is at most {MAX_URL_CHARS} characters.")
    if "://" not in text and text.lower().split("/")[0].endswith(".onion"):
        text = f"http://{text}"  # an onion address as Tor shows it, as Routstr accepts it
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 -- a bad port raises here
    except ValueError:
        raise ListingError(f"{text!r} is not a URL.") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ListingError(f"{text!r}: an address starts with https:// or http://, or is .onion.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ListingError(f"{text!r}: no user name, password, ?query or #fragment, please.")
    if _unreachable_to_strangers(host):
        raise ListingError(f"{text!r} is reachable only from this machine or its home network.")
    return text.rstrip("/")


def _unreachable_to_strangers(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".local", ".lan", ".home.arpa")):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address.is_global


# --- publishing ---------------------------------------------------------------------------


def announce(actor: str) -> Outcome:
    """Publish the offer; refused (nothing changed) with nothing on sale, no address or no
    relay taking it."""
    row = listing()
    offers = list(Offer.objects.all())
    if not offers:
        raise ListingError("Nothing is on sale: put a model on sale first.")
    if not row.urls:
        raise ListingError("Add the address strangers reach the node at first.")
    keys = identity.node_keys()
    # A deletion removes every version of an addressable event up to its own time, and a
    # relay keeps the first of two versions of the same second: a new announcement must be
    # later than the last withdrawal and the last announcement, even within one second.
    created = _later_than(row.withdrawn_at, row.announced_at)
    events = [
        provider_event(keys, row.urls, offers, created),
        handler_event(keys, row.urls, created),
    ]
    outcome = _published(events, "announcement")
    with transaction.atomic():
        Listing.objects.filter(pk=row.pk).update(
            announced_ids=outcome.event_ids, announced_at=_moment(created)
        )
        audit_record("listing_announced", actor=actor, detail=_relays_shown(outcome))
    return outcome


def withdraw(actor: str) -> Outcome:
    """Ask the relays to delete both announcements (NIP-09)."""
    row = listing()
    if row.announced_at is None:
        raise ListingError("The offer was never announced: there is nothing to withdraw.")
    keys = identity.node_keys()
    # Not before the announcement it deletes, which may be dated a second ahead.
    created = _later_than(row.announced_at)
    outcome = _published([deletion_event(keys, row.announced_ids, created)], "withdrawal")
    with transaction.atomic():
        Listing.objects.filter(pk=row.pk).update(announced_ids=[], withdrawn_at=_moment(created))
        audit_record("listing_withdrawn", actor=actor, detail=_relays_shown(outcome))
    return outcome


def listing_refresh() -> Outcome | None:
    """After the offers changed: announce them again, or withdraw when none is left; nothing
    when the offer is not announced."""
    if not is_announced(listing()):
        return None
    if not Offer.objects.exists():
        return withdraw(SYSTEM_ACTOR)
    return announce(SYSTEM_ACTOR)


def listing_refresh_soon() -> None:
    from apps.sharing import tasks

    try:
        tasks.listing_refresh.delay()
    except Exception:
        # A broker outage must not fail the change of price that asked for it.
        log.warning("Could not queue the refresh of the Nostr listing", exc_info=True)


def _published(events: list[Event], what: str) -> Outcome:
    results = relays.publish_events(events, settings.NOSTR_RELAYS, PUBLISH_SECONDS)
    taken = [set(result.accepted) for result in results]
    everywhere = set.intersection(*taken) if taken else set()
    refused = {url: why for result in results for url, why in result.refused.items()}
    if not everywhere:
        reasons = "; ".join(f"{url}: {why}" for url, why in refused.items()) or "none configured"
        raise ListingError(f"No relay took the {what} ({reasons}).")
    return Outcome([r.event_id for r in results], tuple(sorted(everywhere)), refused)


def _relays_shown(outcome: Outcome) -> str:
    return f"{len(outcome.event_ids)} events on {', '.join(outcome.accepted)}"


def _later_than(*moments: datetime | None) -> Timestamp:
    """Now, or a second after the latest of `moments` if that is not yet past."""
    seconds = [int(moment.timestamp()) + 1 for moment in moments if moment is not None]
    return Timestamp.from_secs(max([int(timezone.now().timestamp()), *seconds]))


def _moment(timestamp: Timestamp) -> datetime:
    return datetime.fromtimestamp(timestamp.as_secs(), tz=UTC)


# --- the events -----------------------------------------------------------------------------


def provider_event(keys: Keys, urls: list[str], offers: list[Offer], created: Timestamp) -> Event:
    tags = [["d", provider_id()], *(["u", url] for url in urls)]
    if version := _version():
        tags.append(["version", version])
    content = {"name": NAME, "about": ABOUT, "models": [_model_shown(offer) for offer in offers]}
    return _signed(keys, PROVIDER_KIND, content, tags, created)


def handler_event(keys: Keys, urls: list[str], created: Timestamp) -> Event:
    # NIP-89: which kinds this handler serves (`k`); Routstr's recommendations point at
    # provider announcements the same way.
    tags = [["d", provider_id()], ["k", str(PROVIDER_KIND)], *(["u", url] for url in urls)]
    return _signed(keys, HANDLER_KIND, {"name": NAME, "about": ABOUT}, tags, created)


def deletion_event(keys: Keys, event_ids: list[str], created: Timestamp) -> Event:
    author = keys.public_key().to_hex()
    tags = [
        *(["e", event_id] for event_id in event_ids),
        *(["a", f"{kind}:{author}:{provider_id()}"] for kind in (PROVIDER_KIND, HANDLER_KIND)),
        *(["k", str(kind)] for kind in (PROVIDER_KIND, HANDLER_KIND)),
    ]
    builder = EventBuilder(Kind(DELETION_KIND), "This node no longer sells answers.")
    builder = builder.tags([Tag.parse(tag) for tag in tags]).custom_created_at(created)
    return builder.finalize(keys)


def _signed(
    keys: Keys, kind: int, content: dict[str, Any], tags: list[list[str]], created: Timestamp
) -> Event:
    text = json.dumps(content, separators=(",", ":"))
    builder = EventBuilder(Kind(kind), text).tags([Tag.parse(tag) for tag in tags])
    return builder.custom_created_at(created).finalize(keys)


def _model_shown(offer: Offer) -> dict[str, Any]:
    """A model on sale in Routstr's `sats_pricing` shape: sats per token, per request, and
    the most one request costs."""
    if offer.per_1k_tokens:
        per_token = offer.price_msat / 1000 / 1000
        most = (offer.max_request_msat or 0) / 1000
        pricing = {"prompt": per_token, "completion": per_token, "request": 0, "max_cost": most}
    else:
        price = offer.price_msat / 1000
        pricing = {"prompt": 0, "completion": 0, "request": price, "max_cost": price}
    return {"id": offer.model, "sats_pricing": pricing}


def _version() -> str:
    try:
        return importlib.metadata.version("sovereign")
    except importlib.metadata.PackageNotFoundError:
        return ""
