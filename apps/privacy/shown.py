"""How the privacy detectors and the egress record are shown to people: each detector's name and
what it looks for, the kinds found in a request as "2 e-mail addresses", the export's rows.
Nothing here reads or shows a value the detectors took out: only kinds and counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from apps.privacy.detectors import Kind
from apps.privacy.models import Egress


@dataclass(frozen=True)
class KindShown:
    kind: Kind
    title: str  # the detector, as the settings name it
    one: str  # one value found
    many: str  # several
    description: str


KINDS: dict[str, KindShown] = {
    shown.kind.value: shown
    for shown in (
        KindShown(
            Kind.EMAIL,
            "E-mail addresses",
            "e-mail address",
            "e-mail addresses",
            "Such as ana@example.org.",
        ),
        KindShown(
            Kind.PHONE,
            "Phone numbers",
            "phone number",
            "phone numbers",
            "International (+49 30 …) and national forms; dates, amounts and versions are left.",
        ),
        KindShown(
            Kind.IBAN,
            "IBANs",
            "IBAN",
            "IBANs",
            "Bank account numbers whose checksum holds.",
        ),
        KindShown(
            Kind.CARD,
            "Payment cards",
            "card number",
            "card numbers",
            "Card numbers that pass the Luhn check.",
        ),
        KindShown(
            Kind.IP,
            "IP addresses",
            "IP address",
            "IP addresses",
            "IPv4 and IPv6; this machine's own (127.0.0.1, ::1) is left.",
        ),
        KindShown(
            Kind.ADDRESS,
            "Postal addresses",
            "postal address",
            "postal addresses",
            "Where recognisable: a street with its number, a postal code with its town.",
        ),
        KindShown(
            Kind.BITCOIN,
            "Bitcoin addresses",
            "Bitcoin address",
            "Bitcoin addresses",
            "Legacy, SegWit and Taproot addresses, checksums verified.",
        ),
        KindShown(
            Kind.LIGHTNING,
            "Lightning invoices",
            "Lightning invoice",
            "Lightning invoices",
            "Invoices for any network (lnbc1…, lntb1…).",
        ),
        KindShown(
            Kind.NOSTR,
            "Nostr keys",
            "Nostr key",
            "Nostr keys",
            "Public keys and profiles (npub1…, nprofile1…).",
        ),
        KindShown(
            Kind.API_KEY,
            "API keys and tokens",
            "API key",
            "API keys",
            "Such as sk-…, sov_…, JWTs, AWS keys and other long random tokens.",
        ),
        KindShown(
            Kind.NAME,
            "Household names",
            "household name",
            "household names",
            "Each member's name and the names in their Nostr profile.",
        ),
        KindShown(
            Kind.TERM,
            "Listed words",
            "listed word",
            "listed words",
            "The owner's own list: surnames, the street, the town, an employer, a school.",
        ),
    )
}


def found_shown(found: dict[str, Any]) -> list[str]:
    """The kinds a request had taken out, as people read them, most first: "2 e-mail
    addresses", "1 phone number"."""
    lines = []
    for kind, count in sorted(found.items(), key=lambda item: (-_count(item[1]), item[0])):
        if not isinstance(count, int) or count < 1:
            continue
        shown = KINDS.get(kind)
        if shown is None:  # a detector added later than this list
            lines.append(f"{count} × {kind.replace('_', ' ')}")
        else:
            lines.append(f"{count} {shown.one if count == 1 else shown.many}")
    return lines


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def last_question(body: str) -> str:
    """The last thing a person wrote in a request sent (its last user message), as sent; empty
    when the body holds none."""
    try:
        sent = json.loads(body)
    except ValueError:
        return ""
    messages = sent.get("messages") if isinstance(sent, dict) else None
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


def exported(row: Egress) -> dict[str, Any]:
    """One egress record as the JSON export writes it."""
    return {
        "sent_at": row.sent_at.isoformat(),
        "member_npub": row.member.npub if row.member else None,
        "origin": row.origin,
        "provider": row.provider,
        "url": row.url,
        "model": row.model,
        "body": row.body,
        "found": row.found,
        "redacted": row.redacted,
        "outcome": row.outcome,
        "cost_msat": row.cost_msat,
        "payment_hash": row.payment_hash,
    }
