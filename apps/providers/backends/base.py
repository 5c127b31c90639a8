"""How each kind of provider is authorised and paid (`Kind`), and what one outside request is.

The request itself is sent by calling.py, the one place that talks to providers' chat
endpoints: a kind only says which headers to send, what to do with a 402 (pay, then retry
once), and what to keep from an answer (receipts, balances).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import httpx2


@dataclass(frozen=True)
class ProviderInfo:
    """A provider as its kind sees it: no database object crosses into the HTTP code."""

    id: int
    name: str
    kind: str
    base_url: str
    timeout_seconds: float
    max_price_msat: int
    topup_msat: int
    api_key: str = field(default="", repr=False)  # the owner's key for it (home network), unsealed
    trusted: bool = False  # the owner's word: nothing is redacted for it


@dataclass(frozen=True)
class Call:
    """One outside request."""

    provider: ProviderInfo
    model_id: str
    body: dict[str, Any]  # the exact JSON posted to /v1/chat/completions
    request_id: str  # one per question: the wallet's purposes derive from it
    member_id: int | None  # whose allowance a payment counts against
    price_msat: int  # the price shown: an invoice above it is refused, nothing paid
    origin: str = "api"  # where the question came from: chat, api, agent
    # What the privacy hook took out of `body` ({kind: count}, never a value), and whether it
    # looked at all (False: a trusted provider).
    found: dict[str, int] = field(default_factory=dict)
    redacted: bool = False  # only the pipeline's privacy hook says it was
    payer: str = ""  # whom the provider is paid for, when someone: an agent task ("agent:42")

    @property
    def caller(self) -> str:
        """The wallet's caller: always the provider, so the owner's cap on it holds for every
        payment; an agent's payment also names its task as the payer (both caps count)."""
        return f"provider:{self.provider.name}"

    def purpose(self, what: str) -> str:
        """A wallet purpose for this request: paying it again returns the first payment."""
        return f"{what}:{self.provider.name}:{self.request_id}"


class Outcome(enum.StrEnum):
    ANSWERED = "answered"
    FAILED = "failed"
    TIMEOUT = "timeout"
    INVOICE_REFUSED = "invoice_refused"
    OVER_BUDGET = "over_budget"
    PAYMENT_PENDING = "payment_pending"
    STOPPED = "stopped"
    WALLET_UNAVAILABLE = "wallet_unavailable"  # the household's own node, not the provider


class Unanswered(Exception):
    """The request cannot go on, and nothing more is paid for it; the message is for people."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class Authorization:
    headers: dict[str, str]
    payment_purpose: str = ""  # the wallet payment made for this request, if any


class Kind(ABC):
    """One kind of provider: L402, MPP, a prepaid key, or a server on the home network."""

    @abstractmethod
    async def credentials(self, call: Call) -> Authorization:
        """Headers for the first attempt: a kept token or key, or none."""

    def credentials_now(self, call: Call) -> Authorization | None:
        """The same, when the database alone can say (run in the thread that writes the
        egress record, saving a trip there); None when `credentials` must do more."""
        return None

    async def on_payment_required(self, call: Call, response: httpx2.Response) -> Authorization:
        """A 402 (its body already read): check, pay, keep what was bought, and return the
        retry's headers. Called at most once a request: a second 402 ends it unpaid."""
        raise Unanswered(Outcome.FAILED, "The provider asked to be paid, and it takes no payment.")

    async def on_refused(self, call: Call, response: httpx2.Response) -> None:  # noqa: B027
        """The provider refused the request (a status other than 200 or 402, its body read):
        a kind may drop a credential it will not take again."""

    async def on_answer(self, call: Call, response: httpx2.Response) -> None:  # noqa: B027
        """An answer's headers arrived (receipts, cost, balance); most kinds keep nothing."""

    async def on_usage(self, call: Call, prompt_tokens: int, completion_tokens: int) -> None:  # noqa: B027
        """The answer ended, having used this many tokens; most kinds keep nothing."""
