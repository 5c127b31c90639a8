"""NIP-98 HTTP auth: checks a signed kind-27235 event against the request it authorises.

Pure checks on the event itself. Whether its challenge is unused, its id unseen and its
key a member's is for the services, which keep that state in the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from nostr_sdk import Event

HTTP_AUTH_KIND = 27235
MAX_AGE_SECONDS = 60


class AuthRefused(Exception):
    """A login or signed request refused; the message says which check failed."""

    status = 401
    code = "invalid_api_key"


@dataclass(frozen=True)
class SignedRequest:
    pubkey: str
    event_id: str
    created_at: int
    challenge: str | None


def event_from_authorization(header: str) -> str:
    """The event JSON inside `Authorization: Nostr <base64>`."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "nostr" or not token.strip():
        raise AuthRefused("Authorization must be 'Nostr <base64 of the signed event>'.")
    try:
        return base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, ValueError):  # ValueError: non-ASCII, UnicodeDecodeError: not text
        raise AuthRefused("The Nostr authorization is not valid base64.") from None


def verify(event_json: str, *, urls: set[str], method: str, body: bytes, now: int) -> SignedRequest:
    event = _parse(event_json)
    if event.kind().as_u16() != HTTP_AUTH_KIND:
        raise AuthRefused(f"The event has kind {event.kind().as_u16()}; NIP-98 needs 27235.")
    created_at = event.created_at().as_secs()
    if abs(now - created_at) > MAX_AGE_SECONDS:
        raise AuthRefused("The event was not signed within the last 60 seconds.")
    tags = _first_values(event)
    if tags.get("u") not in urls:
        raise AuthRefused("The event's 'u' tag is not this request's URL on this node.")
    if (tags.get("method") or "").upper() != method.upper():
        raise AuthRefused(f"The event's 'method' tag is not {method.upper()}.")
    _check_payload(tags.get("payload"), body)
    # from_json parses without checking: the id and the signature are checked here.
    if not event.verify():
        raise AuthRefused("The event's id or signature is wrong.")
    return SignedRequest(
        pubkey=event.author().to_hex(),
        event_id=event.id().to_hex(),
        created_at=created_at,
        challenge=tags.get("challenge"),
    )


def _parse(event_json: str) -> Event:
    try:
        return Event.from_json(event_json)
    except Exception:  # nostr-sdk raises its own error types for every malformed field
        raise AuthRefused("The signed event is not a valid Nostr event.") from None


def _first_values(event: Event) -> dict[str, str]:
    values: dict[str, str] = {}
    for tag in event.tags():
        parts = tag.to_vec()
        if len(parts) >= 2:
            values.setdefault(parts[0], parts[1])
    return values


def _check_payload(payload: str | None, body: bytes) -> None:
    if not body and payload is None:
        return
    if payload != hashlib.sha256(body).hexdigest():
        raise AuthRefused("The event's 'payload' tag is not the SHA-256 of the request body.")
