"""The one guard in front of everything strangers may ask (paid chat, Routstr's endpoints):

    body_read(request) -> bytes          the body, or Refused(413) before a large one is read
    admitted(request) -> str             the client's address key, counted against its limit;
                                         Refused(429, Retry-After) once over it
    offer_admitted(address)              before a fresh invoice: Refused when this address was
                                         given too many within the hour, or the node holds
                                         too many unpaid ones
    offer_counted(address)               a fresh invoice was issued to this address
    address_of(request) -> str           the client's address key (below)
    refusal_audited(action, address, detail)
                                         at most one audit row per address a minute

An IPv6 client is counted by its /64 (one subscriber's network: a host there picks any of
2^64 addresses), an IPv4 one by its address. Each caller shapes `Refused` its own way (OpenAI's
error body, Routstr's `{"detail"}`).
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from apps.audit.services import audit_record
from apps.identity import services as identity
from apps.identity.access import client_address
from apps.sharing import balances
from apps.wallet.models import Invoice

LIMITED = "sharing_limited"
CAPPED = "sharing_capped"
AUDIT_LABELS = {
    LIMITED: "Stranger over the request limit",
    CAPPED: "Stranger refused a new invoice (too many unpaid)",
}
AUDIT_FOLDED = (LIMITED, CAPPED)
ACTOR = "stranger"
MINUTE = timedelta(minutes=1)
LIMIT_RETRY_AFTER = 60
# Unpaid invoices a 402 or a key invoice leaves behind, bounded: per address, fresh offers
# within an invoice's lifetime (a 402 offers an L402 and an MPP balance: one offer); for the
# whole node, invoices of sales not yet paid nor expired.
OFFERS_PER_ADDRESS = 5
OFFER_WINDOW = timedelta(hours=1)  # the wallet's invoice expiry
UNPAID_OVERALL = 1_000


class Refused(Exception):
    """A stranger's request refused before any work: the status, what to tell them, and when
    to ask again (seconds) if that is known."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def address_key(address: str) -> str:
    """What limits count a client by: an IPv6 address's /64, an IPv4 address as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def address_of(request: HttpRequest) -> str:
    return address_key(client_address(request))


def body_read(request: HttpRequest) -> bytes:
    """The request's body, refused by its declared size before it is read, and by its size."""
    limit = int(settings.SHARING_MAX_REQUEST_BYTES)
    declared = str(request.META.get("CONTENT_LENGTH") or "0")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    try:
        body = request.body  # a chunked body declares no length: Django caps what it reads
    except RequestDataTooBig:
        raise _too_large(limit) from None
    if len(body) > limit:
        raise _too_large(limit)
    return body


def size_checked(request: HttpRequest) -> None:
    """Refused(413) for a declared size over the limit, nothing read (for requests whose body
    is read later, or never)."""
    limit = int(settings.SHARING_MAX_REQUEST_BYTES)
    declared = str(request.META.get("CONTENT_LENGTH") or "0")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


def _too_large(limit: int) -> Refused:
    return Refused(413, f"The request is larger than this node takes ({limit} bytes).")


def admitted(request: HttpRequest) -> str:
    """This request counted against its client's limit; the client's address key."""
    address = address_of(request)
    limit = int(settings.SHARING_REQUESTS_PER_MINUTE)
    if not identity.attempt_allowed(f"sharing:{address}", limit, MINUTE):
        refusal_audited(LIMITED, address, request.path[:100])
        raise Refused(
            429, f"At most {limit} requests a minute from one address.", LIMIT_RETRY_AFTER
        )
    return address


def offer_admitted(address: str, *, per_address: bool = True) -> None:
    """Refused before a fresh invoice when this address was given OFFERS_PER_ADDRESS within
    the hour (unless `per_address` is off: a client topping up a balance it paid), or the
    node holds UNPAID_OVERALL unpaid sale invoices."""
    if per_address and identity.attempts_exceeded(
        _offer_key(address), OFFERS_PER_ADDRESS, OFFER_WINDOW
    ):
        refusal_audited(CAPPED, address, "per address")
        raise Refused(
            429,
            f"This address was given {OFFERS_PER_ADDRESS} invoices within the hour; pay one "
            "of them, or ask again once they expire.",
            LIMIT_RETRY_AFTER,
        )
    unpaid = Invoice.objects.filter(
        caller=balances.CALLER, state=Invoice.State.UNPAID, expires_at__gt=timezone.now()
    )
    if unpaid.count() >= UNPAID_OVERALL:
        refusal_audited(CAPPED, address, "overall")
        raise Refused(
            503, "This node has too many unpaid invoices out; ask again later.", LIMIT_RETRY_AFTER
        )


def offer_counted(address: str) -> None:
    identity.attempt_record(_offer_key(address))


def _offer_key(address: str) -> str:
    return f"sharing-offer:{address}"


def refusal_audited(action: str, address: str, detail: str) -> None:
    """A refusal anyone can cause, audited once a minute per address at most: a flood of
    refused requests leaves one row a minute, not one a request."""
    with transaction.atomic():
        if identity.attempt_allowed(f"sharing-audit:{address}", 1, MINUTE):
            audit_record(action, actor=f"{ACTOR} {address}", detail=detail)
