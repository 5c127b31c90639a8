"""Plain results and errors of the Nostr relay gateway, free of nostr-sdk types.

Callers (services, views, Celery tasks) only ever see these, so they can be built in
tests and kept in caches without touching the Rust bindings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SignerState = Literal["pending", "signed", "failed"]
# ("pending", None) | ("signed", event JSON) | ("failed", a message for the person)
SignerStatus = tuple[SignerState, str | None]


@dataclass(frozen=True)
class Profile:
    """The parts of a kind-0 profile the node shows; both already checked."""

    name: str | None
    picture: str | None
    names: tuple[str, ...] = ()  # every name it gives (name, display_name), for privacy


@dataclass(frozen=True)
class DeliveryResult:
    """Where a NIP-17 message went.

    `message_id` is the id of the kind-14 rumor: a reply carries it in an `e` tag, so it
    is what to remember to match answers. `wrap_id` is the id of the published gift wrap.
    """

    message_id: str
    wrap_id: str
    accepted: tuple[str, ...]
    refused: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedMessage:
    """A NIP-17 message sent to the node, unwrapped and checked.

    `sender` is the hex key that signed the seal (never only what the rumor claims);
    `wrap_id` is the id of the gift wrap it came in, to read each wrap once; `sent_at` is
    the rumor's time (the wrap's own time is back-dated at random on purpose).
    """

    wrap_id: str
    sender: str
    content: str
    sent_at: int


@dataclass(frozen=True)
class RemoteSignerSession:
    """A started `nostrconnect://` login: show `uri` (as a QR code), poll `session_id`."""

    session_id: str
    uri: str


class RelayError(Exception):
    """Talking to relays or to a remote signer failed; the message can be shown."""


class RelaysUnreachable(RelayError):
    """No relay answered in time: nothing is known, so nothing may be taken as settled."""


class DeliveryFailed(RelayError):
    """No relay accepted a message; `result.refused` says why, relay by relay."""

    def __init__(self, message: str, result: DeliveryResult) -> None:
        super().__init__(message)
        self.result = result


class RemoteSignerError(RelayError):
    """A remote signer (NIP-46) refused, failed or did not answer in time."""


class TooManySessions(RelayError):
    """Too many `nostrconnect://` logins are waiting for their signer at once."""


class BunkerUriInvalid(ValueError):
    """A pasted `bunker://` address that cannot be used; the message says why."""
