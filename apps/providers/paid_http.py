"""A paid HTTP request to any URL (an agent's `paid_http` step), through the providers'
L402/MPP client: GET, and on a 402, pay its challenge once under the caller's purpose."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class PaidHttpFailed(Exception):
    """The request ended without an answer; `code` is a pipeline RefusalCode's value, and
    `unknown` says a payment's outcome is not known yet (never a failure: run again later)."""

    def __init__(self, message: str, code: str, *, unknown: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.unknown = unknown


@dataclass(frozen=True)
class PaidAnswer:
    status: int
    text: str  # the body, bounded, as text: untrusted data
    cost_msat: int  # what was paid for it (0: nothing)
    payment_hash: str = ""


def paid_get(url: str, *, purpose: str, payer: str, member: Any, max_price_msat: int) -> PaidAnswer:
    raise PaidHttpFailed("Paid HTTP requests are not built yet.", "provider_failed")
