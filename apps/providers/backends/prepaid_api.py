"""The HTTP side of prepaid providers: how a key is got and topped up at Routstr and at PPQ.

Two flavours of one idea (lightning.md §3.1, §3.2): a `sk-…` key holds a balance that a
Lightning invoice tops up.

- Routstr: `POST /lightning/invoice {"amount_sats", "purpose": "create"|"topup"}` (a top-up
  with the key as Bearer), pay, then `GET /lightning/invoice/{id}/status` until `paid`, which
  carries the key; Routstr credits an invoice when it is asked about it, so the status must be
  asked after paying, and `POST /lightning/recover {"bolt11"}` answers the same when the
  status answer was lost. Its `payment_hash` field holds a Cashu mint quote id, not the
  invoice's hash, and is never used: the wallet takes the hash from the node's `decode`.
  Balance: `GET /v1/balance/info` (msat).
- PPQ: `POST /accounts/create` gives the key (and a `credit_id`) before anything is paid;
  `POST /topup/create/btc-lightning {"amount", "currency": "SATS"}` gives the invoice;
  `GET /topup/status/{id}` says when it is credited. Balance: `POST /credits/balance`, in USD.

Everything a provider answers is untrusted: answers are size-capped, and ids and keys must
have a safe shape (a key goes into a header).
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx2

from apps.providers.backends.base import ProviderInfo

ANSWER_BYTES = 1 << 16  # a key, an invoice or a balance: never more
KEY_SHAPE = re.compile(r"sk-[A-Za-z0-9_-]{8,200}")
ID_SHAPE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
POLL_SECONDS = 0.2
CREDITED = {"paid", "settled", "complete", "completed"}  # Routstr's word, and BTCPay's (PPQ)


class Flavour(enum.StrEnum):
    ROUTSTR = "routstr"
    PPQ = "ppq"


class ProviderSilent(Exception):
    """No answer (a lost connection, a timeout): what was asked may or may not have been done."""


class ProviderRefused(Exception):
    """An answer that says no, or one that makes no sense; the message says which."""


@dataclass(frozen=True)
class TopupInvoice:
    invoice_id: str
    bolt11: str


@dataclass(frozen=True)
class Balance:
    msat: int | None = None  # Routstr's own number
    usd: float | None = None  # PPQ tells its balance in dollars only


class PrepaidApi:
    """One provider's key and top-up endpoints, over one client."""

    flavour: Flavour

    def __init__(self, provider: ProviderInfo, client: httpx2.AsyncClient) -> None:
        self.provider = provider
        self.client = client

    async def topup_invoice(self, key: str | None, sats: int) -> TopupInvoice:
        raise NotImplementedError

    async def credited(self, key: str, invoice: TopupInvoice) -> str | None:
        """The key, once the provider has credited this invoice; None while it has not."""
        raise NotImplementedError

    async def balance(self, key: str, credit_id: str) -> Balance:
        raise NotImplementedError

    async def credited_within(self, key: str, invoice: TopupInvoice) -> str | None:
        """Ask until the invoice is credited, for at most the provider's timeout."""
        deadline = time.monotonic() + self.provider.timeout_seconds
        while True:
            found = await self.credited(key, invoice)
            if found is not None or time.monotonic() > deadline:
                return found
            await asyncio.sleep(POLL_SECONDS)

    async def answer(
        self, method: str, path: str, *, key: str | None = None, body: Any = None
    ) -> Any:
        """The JSON of a 2xx answer; ProviderRefused for any other, ProviderSilent for none."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            async with self.client.stream(
                method,
                f"{self.provider.base_url}{path}",
                json=body,
                headers=headers,
                timeout=self.provider.timeout_seconds,
            ) as response:
                raw = await _capped(response)
        except httpx2.HTTPError as error:
            raise ProviderSilent(
                f"{method} {path} got no answer ({type(error).__name__})"
            ) from None
        if not 200 <= response.status_code < 300:
            raise ProviderRefused(f"{method} {path} answered {response.status_code}")
        try:
            return json.loads(raw)
        except ValueError:
            raise ProviderRefused(f"{method} {path} answered something that is not JSON") from None


async def _capped(response: httpx2.Response) -> bytes:
    received = bytearray()
    async for part in response.aiter_bytes():
        received += part
        if len(received) > ANSWER_BYTES:
            raise ProviderRefused("the answer is far larger than any key or invoice")
    return bytes(received)


class RoutstrApi(PrepaidApi):
    flavour = Flavour.ROUTSTR

    async def topup_invoice(self, key: str | None, sats: int) -> TopupInvoice:
        purpose = "topup" if key else "create"
        body = {"amount_sats": sats, "purpose": purpose}
        made = await self.answer("POST", "/lightning/invoice", key=key, body=body)
        return TopupInvoice(_id(made, "invoice_id"), _text(made, "bolt11"))

    async def credited(self, key: str, invoice: TopupInvoice) -> str | None:
        path = f"/lightning/invoice/{quote(invoice.invoice_id, safe='')}/status"
        try:
            status = await self.answer("GET", path)
        except (ProviderSilent, ProviderRefused):  # the answer (and its key) was lost, or the
            # invoice id is not known there any more: Routstr finds the invoice by itself
            status = await self.answer(
                "POST", "/lightning/recover", body={"bolt11": invoice.bolt11}
            )
        if not isinstance(status, dict) or str(status.get("status")).lower() not in CREDITED:
            return None
        return key or key_checked(status.get("api_key"))

    async def balance(self, key: str, credit_id: str) -> Balance:
        info = await self.answer("GET", "/v1/balance/info", key=key)
        return Balance(msat=_whole_number(info, "balance"))


class PPQApi(PrepaidApi):
    flavour = Flavour.PPQ

    async def account_create(self) -> tuple[str, str]:
        """A new account: its key and its credit id (both bearer secrets)."""
        made = await self.answer("POST", "/accounts/create")
        return key_checked(made.get("api_key") if isinstance(made, dict) else None), _id(
            made, "credit_id"
        )

    async def topup_invoice(self, key: str | None, sats: int) -> TopupInvoice:
        body = {"amount": sats, "currency": "SATS"}
        made = await self.answer("POST", "/topup/create/btc-lightning", key=key, body=body)
        return TopupInvoice(_id(made, "invoice_id"), _text(made, "lightning_invoice"))

    async def credited(self, key: str, invoice: TopupInvoice) -> str | None:
        path = f"/topup/status/{quote(invoice.invoice_id, safe='')}"
        status = await self.answer("GET", path, key=key)
        if not isinstance(status, dict) or str(status.get("status")).lower() not in CREDITED:
            return None
        return key

    async def balance(self, key: str, credit_id: str) -> Balance:
        told = await self.answer("POST", "/credits/balance", body={"credit_id": credit_id})
        usd = told.get("balance") if isinstance(told, dict) else None
        if isinstance(usd, bool) or not isinstance(usd, int | float | str):
            raise ProviderRefused("the balance is not a number")
        try:
            return Balance(usd=float(usd))
        except ValueError:
            raise ProviderRefused("the balance is not a number") from None


APIS: dict[Flavour, type[PrepaidApi]] = {Flavour.ROUTSTR: RoutstrApi, Flavour.PPQ: PPQApi}


async def flavour_detect(provider: ProviderInfo, client: httpx2.AsyncClient) -> Flavour:
    """Which prepaid API the provider speaks, from what it answers: Routstr's `/v1/info` names
    its Cashu mints; PPQ lists its top-up methods at `/topup/payment-methods`."""
    probe = PrepaidApi(provider, client)
    try:
        info = await probe.answer("GET", "/v1/info")
        if isinstance(info, dict) and ("mints" in info or "npub" in info):
            return Flavour.ROUTSTR
    except (ProviderSilent, ProviderRefused):
        pass
    try:
        await probe.answer("GET", "/topup/payment-methods")
        return Flavour.PPQ
    except (ProviderSilent, ProviderRefused):
        pass
    raise ProviderRefused(
        "it answers neither Routstr's /v1/info nor PPQ's /topup/payment-methods, so it is "
        "not a prepaid provider this node knows how to top up"
    )


def key_checked(value: Any) -> str:
    if not isinstance(value, str) or not KEY_SHAPE.fullmatch(value):
        raise ProviderRefused("the key it gave is not an sk-… key")
    return value


def _id(answer: Any, field: str) -> str:
    value = answer.get(field) if isinstance(answer, dict) else None
    if not isinstance(value, str) or not ID_SHAPE.fullmatch(value):
        raise ProviderRefused(f"its answer has no usable {field}")
    return value


def _text(answer: Any, field: str) -> str:
    value = answer.get(field) if isinstance(answer, dict) else None
    if not isinstance(value, str) or not 0 < len(value) <= 4000:
        raise ProviderRefused(f"its answer has no {field}")
    return value


def _whole_number(answer: Any, field: str) -> int:
    value = answer.get(field) if isinstance(answer, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProviderRefused(f"its {field} is not a whole number")
    return value
