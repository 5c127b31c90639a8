"""The prepaid kind: an `sk-…` key whose balance is topped up over Lightning (Routstr, PPQ).

The key is one `Credential` (scheme Bearer, sealed at rest) per provider. Which API the
provider speaks (its flavour, prepaid_api.py) is found from what it answers when the first key
is bought, and kept in the credential's note.

Money, in the order things are written:
- A key bought by paying (Routstr) is a credential written `pending`, with the purpose of the
  payment that buys it, BEFORE the invoice is paid; the invoice is kept in its note. Whatever
  happens after (a lost status answer, a crash), a later request finds the row, asks the
  wallet how the payment ended (the reconciler settles it from the node's records) and, if it
  was paid, asks the provider for the key (status, or `/lightning/recover`): never a second
  payment. A PPQ key costs nothing: it is live at once, and its first top-up follows.
- A top-up is written into the live credential's note (`topup`: purpose, then invoice) before
  its invoice is paid, the same way; one at a time per provider (claimed in a transaction), and
  at most one payment per request. A 402 with no challenge means the balance is short: one
  top-up of `provider.topup_msat`, within every budget, then the request is sent again.
- The balance is the provider's last word: Routstr's cost headers and balance answers keep
  `Credential.balance_msat`; PPQ tells dollars only, kept as `balance_usd` in the note.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import httpx2
from asgiref.sync import sync_to_async
from django.utils import timezone

from apps.providers import paying, sealing
from apps.providers.backends import prepaid_keys as keys
from apps.providers.backends.base import Authorization, Call, Kind, Outcome, Unanswered
from apps.providers.backends.prepaid_api import (
    APIS,
    Balance,
    Flavour,
    PPQApi,
    PrepaidApi,
    ProviderRefused,
    ProviderSilent,
    TopupInvoice,
    flavour_detect,
)
from apps.providers.models import Credential

COST_HEADER = "X-Routstr-Cost-Msats"
PPQ_MIN_SATS = 100  # PPQ's smallest Lightning top-up
MOST_SATS = 100_000_000  # a published price above a bitcoin is not a price
T = TypeVar("T")


class PrepaidKind(Kind):
    def __init__(self) -> None:
        self.kept: keys.Kept | None = None
        self.paid_purpose = ""  # the one payment this request made, if any

    async def credentials(self, call: Call) -> Authorization:
        self.kept = await self._usable(call)
        return self._authorization()

    async def on_payment_required(self, call: Call, response: httpx2.Response) -> Authorization:
        challenge = response.headers.get("WWW-Authenticate", "")
        if challenge:
            scheme = re.match(r"[A-Za-z0-9_-]{1,20}", challenge.strip())  # the provider's text
            raise Unanswered(
                Outcome.FAILED,
                f"{call.provider.name} asked for a payment challenge "
                f"({scheme.group(0) if scheme else 'of no known scheme'}), which a prepaid "
                "provider does not: is it added with the right kind?",
            )
        assert self.kept is not None
        told = _balance_told(response)
        if told is not None:
            await sync_to_async(keys.balance_keep)(self.kept.id, Balance(msat=told))
        if self.paid_purpose:
            raise Unanswered(
                Outcome.FAILED,
                f"{call.provider.name} says the balance is short right after a top-up of "
                f"{_sats(call)} sats; nothing more is paid for this question. One top-up may be "
                "less than what one request needs there.",
            )
        async with _api(call, self.kept.flavour) as api:
            await self._topup(call, self.kept, api)
        return self._authorization()

    async def on_refused(self, call: Call, response: httpx2.Response) -> None:
        """A 401 on the key: the provider no longer knows it (its balance is out of reach);
        it is set aside and the next question buys a key anew, within the budgets."""
        if self.kept is not None and response.status_code == 401:
            await sync_to_async(keys.key_set_aside)(self.kept.id)

    async def on_answer(self, call: Call, response: httpx2.Response) -> None:
        if self.kept is not None:
            cost = _cost_told(response)
            await sync_to_async(keys.credential_used)(self.kept.id, cost)

    def _authorization(self) -> Authorization:
        assert self.kept is not None
        headers = {"Authorization": f"Bearer {self.kept.key}"}
        return Authorization(headers, payment_purpose=self.paid_purpose)

    # The key -----------------------------------------------------------------------------
    async def _usable(self, call: Call) -> keys.Kept:
        for _attempt in range(3):  # again only after another request's purchase was abandoned
            kept = await sync_to_async(keys.key_kept)(call.provider.id)
            if kept is None:
                kept = await self._key_buy(call)
            elif kept.state == Credential.State.PENDING:
                kept = await self._key_finish(call, kept)
            elif kept.note.get("topup"):
                kept = await self._topup_leftover(call, kept)
            if kept is not None:
                return kept
        raise Unanswered(Outcome.FAILED, f"No key could be had from {call.provider.name}.")

    async def _key_buy(self, call: Call) -> keys.Kept | None:
        """Buy this provider's key; None when another request began buying one first."""
        async with _api(call, await sync_to_async(keys.flavour_known)(call.provider.id)) as api:
            purpose = call.purpose("topup")
            if not isinstance(api, PPQApi) and _sats(call) < 1:  # PPQ's key costs nothing
                raise _too_small(call, 1)
            kept, mine = await sync_to_async(keys.key_claim)(call.provider.id, purpose, api.flavour)
            if not mine:
                return None
            abandon = _abandoning(kept.id)
            if isinstance(api, PPQApi):
                key, credit_id = await _asked(call, api.account_create(), abandon)
                sealed = {"credit_id": sealing.seal(credit_id)}  # a bearer secret too
                kept = await sync_to_async(keys.key_live)(kept.id, key, sealed)
                await self._topup(call, kept, api)
                return await sync_to_async(keys.key_kept)(call.provider.id)
            invoice = await _asked(call, api.topup_invoice(None, _sats(call)), abandon)
            kept = await sync_to_async(keys.note_merge)(kept.id, {"invoice": asdict(invoice)})
            await self._pay(call, invoice.bolt11, purpose, abandon)
            return await self._key_fetch(call, kept, api)

    async def _key_finish(self, call: Call, pending: keys.Kept) -> keys.Kept | None:
        """A key whose purchase an earlier request began: fetched if its payment went
        through; None when that purchase is abandoned (nothing was paid)."""
        if not await _payment_ended(call, pending.purpose, pending.age_seconds):
            await sync_to_async(keys.abandon)(pending.id)
            return None
        async with _api(call, pending.flavour) as api:
            return await self._key_fetch(call, pending, api)

    async def _key_fetch(self, call: Call, kept: keys.Kept, api: PrepaidApi) -> keys.Kept:
        invoice = _invoice_noted(call, kept.note)
        try:
            key = await api.credited_within("", invoice)
        except (ProviderSilent, ProviderRefused):
            key = None
        if key is None:
            raise Unanswered(
                Outcome.FAILED,
                f"The key from {call.provider.name} is paid for, but it has not given it yet. "
                "It is asked for again on the next question; it is not paid again.",
            )
        kept = await sync_to_async(keys.key_live)(kept.id, key, {"invoice": None})
        await _balance_refresh(api, kept)
        return kept

    # Top-ups -----------------------------------------------------------------------------
    async def _topup(self, call: Call, kept: keys.Kept, api: PrepaidApi) -> None:
        """One top-up of the kept key, paid at most once for this request."""
        purpose = call.purpose("topup")
        seen = int(kept.note.get("topups", 0))
        for _attempt in range(2):
            claim = await sync_to_async(keys.topup_claim)(kept.id, purpose, seen)
            if claim.mine:
                break
            if claim.fresh:
                return  # topped up since this request read the key: the retry needs no payment
            assert claim.earlier is not None
            if await self._topup_resume(call, kept, claim.earlier, api):
                return  # another request's top-up went through: likewise
        else:
            raise Unanswered(Outcome.FAILED, f"No top-up could be begun at {call.provider.name}.")
        smallest = PPQ_MIN_SATS if isinstance(api, PPQApi) else 1
        if _sats(call) < smallest:
            await sync_to_async(keys.topup_clear)(kept.id, purpose)
            raise _too_small(call, smallest)
        clear = _topup_clearing(kept.id, purpose)
        invoice = await _asked(call, api.topup_invoice(kept.key, _sats(call)), clear)
        try:
            slot = await sync_to_async(keys.topup_note)(kept.id, purpose, asdict(invoice))
        except keys.TopupTaken as taken:
            raise Unanswered(Outcome.FAILED, str(taken)) from None
        await self._pay(call, invoice.bolt11, purpose, clear)
        await self._topup_finish(call, kept, slot, api)

    async def _topup_resume(
        self,
        call: Call,
        kept: keys.Kept,
        slot: dict[str, Any],
        api: PrepaidApi,
        *,
        wait: bool = True,
    ) -> bool:
        """A top-up an earlier request began: True once it is credited; False when it is
        dropped (its payment failed or was never made)."""
        age = timezone.now().timestamp() - float(slot.get("at", 0))
        if await _payment_ended(call, slot["purpose"], age):
            await self._topup_finish(call, kept, slot, api, wait=wait)
            return True
        await sync_to_async(keys.topup_clear)(kept.id, slot["purpose"])
        return False

    async def _topup_leftover(self, call: Call, kept: keys.Kept) -> keys.Kept:
        """A top-up a crash or a lost answer left open: finished if it can be now. The key is
        used either way; a top-up still pending does not hold the request up."""
        try:
            async with _api(call, kept.flavour) as api:
                # One look, not a wait: the key's balance may well answer this question.
                await self._topup_resume(call, kept, kept.note["topup"], api, wait=False)
        except Unanswered:
            pass
        return await sync_to_async(keys.key_kept)(call.provider.id) or kept

    async def _topup_finish(
        self,
        call: Call,
        kept: keys.Kept,
        slot: dict[str, Any],
        api: PrepaidApi,
        *,
        wait: bool = True,
    ) -> None:
        invoice = _invoice_noted(call, slot)
        try:
            if wait:
                credited = await api.credited_within(kept.key, invoice)
            else:
                credited = await api.credited(kept.key, invoice)
        except (ProviderSilent, ProviderRefused):
            credited = None
        if credited is None:
            raise Unanswered(
                Outcome.FAILED,
                f"A top-up of {call.provider.name} is paid, but it has not credited it yet. It "
                "is checked again on the next question; it is not paid again.",
            )
        await sync_to_async(keys.topup_clear)(kept.id, slot["purpose"], credited=True)
        await _balance_refresh(api, kept)

    async def _pay(
        self, call: Call, bolt11: str, purpose: str, undo: Callable[[], Awaitable[None]]
    ) -> None:
        """Pay a top-up invoice (at most the amount asked); `undo` forgets the purchase when
        nothing was paid. A pending outcome keeps it: the reconciler settles the payment."""
        try:
            await paying.invoice_pay(
                call,
                bolt11,
                purpose,
                live_token=False,
                max_amount_msat=_sats(call) * 1000,
                retry_failed=False,  # the purchase wrote this purpose down: it pays under no other
            )
        except Unanswered as stop:
            if stop.outcome == Outcome.PAYMENT_PENDING:
                self.paid_purpose = purpose
                raise
            await undo()
            raise _refusal(call, stop) from None
        self.paid_purpose = purpose


# Prices ----------------------------------------------------------------------------------
def catalog_prices(models_json: Any) -> dict[str, dict[str, int]]:
    """Prices from a prepaid provider's `/v1/models`, by model id: Routstr's `sats_pricing`
    (sats per token; `max_cost` in sats per request) as msat per 1,000 tokens, and
    `max_cost_msat`; `context_length` when given. PPQ publishes dollars only: its models get
    no price here (the provider's max_price_msat then applies)."""
    entries = models_json.get("data") if isinstance(models_json, dict) else models_json
    prices: dict[str, dict[str, int]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            prices[entry["id"]] = _entry_prices(entry)
    return prices


def _entry_prices(entry: dict[str, Any]) -> dict[str, int]:
    found: dict[str, int] = {}
    sats = entry.get("sats_pricing")
    if isinstance(sats, dict):
        for field, name, per in (
            ("prompt", "prompt_msat_per_1k", 1_000_000),
            ("completion", "completion_msat_per_1k", 1_000_000),
            ("max_cost", "max_cost_msat", 1000),
        ):
            value = _msat(sats.get(field), per)
            if value is not None:
                found[name] = value
    context = entry.get("context_length")
    if isinstance(context, int) and not isinstance(context, bool) and context > 0:
        found["context_length"] = context
    return found


def _msat(value: Any, per: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))  # 0.1 sat stays 0.1, not 0.1000000000000000055
    except InvalidOperation:
        return None
    if not number.is_finite() or not 0 <= number <= MOST_SATS:
        return None
    return math.ceil(number * per)


# Talking to the provider -----------------------------------------------------------------
@asynccontextmanager
async def _api(call: Call, flavour: Flavour | None) -> AsyncIterator[PrepaidApi]:
    """The provider's prepaid API over a client of its own, for one flow (a key, a top-up);
    the flavour found by asking the provider when none is known yet."""
    async with httpx2.AsyncClient(follow_redirects=False, trust_env=False) as client:
        if flavour is None:
            try:
                flavour = await flavour_detect(call.provider, client)
            except ProviderRefused as error:
                raise Unanswered(Outcome.FAILED, f"{call.provider.name}: {error}.") from None
        yield APIS[flavour](call.provider, client)


def _invoice_noted(call: Call, note: dict[str, Any]) -> TopupInvoice:
    """The invoice a purchase wrote down before paying it. A paid purchase without one is not
    dropped (its money is real): it waits for the owner."""
    try:
        return TopupInvoice(**note["invoice"])
    except (KeyError, TypeError):
        raise Unanswered(
            Outcome.FAILED,
            f"A payment to {call.provider.name} went through but its invoice was not noted; "
            "nothing more is paid until the owner looks at it.",
        ) from None


async def _asked(call: Call, asking: Awaitable[T], undo: Callable[[], Awaitable[None]]) -> T:
    """A provider's answer before anything is paid; when there is none, `undo` forgets the
    purchase and the request ends (nothing was paid)."""
    try:
        return await asking
    except (ProviderSilent, ProviderRefused) as error:
        await undo()
        raise Unanswered(
            Outcome.FAILED,
            f"{call.provider.name} could not be topped up: {error}. Nothing was paid.",
        ) from None


async def _payment_ended(call: Call, purpose: str, age_seconds: float) -> bool:
    """Whether the payment for `purpose` went through: True paid, False failed or never made
    (then nothing was paid). Pending, or possibly still about to be made by the request that
    began it, is not an end: that request ends here, and nothing is paid again."""
    try:
        paid = await paying.payment_settled(purpose)
    except Unanswered as stop:
        if stop.outcome == Outcome.PAYMENT_PENDING:
            raise Unanswered(
                Outcome.PAYMENT_PENDING,
                f"A payment for the balance at {call.provider.name} is still pending. Its "
                "outcome is not known yet; the wallet settles it from the node's records and it "
                "is not paid again. Ask again in a minute.",
            ) from None
        return False
    if paid is None and age_seconds < _in_flight_seconds(call):
        raise Unanswered(
            Outcome.PAYMENT_PENDING,
            f"Another question is topping up {call.provider.name} right now; ask again in a "
            "moment.",
        )
    return paid is not None


def _in_flight_seconds(call: Call) -> float:
    """How long a purchase may take between being written down and its payment (asking the
    provider for an invoice): past that, a purchase with no payment was abandoned."""
    return 2 * call.provider.timeout_seconds + 30


def _refusal(call: Call, stop: Unanswered) -> Unanswered:
    sats, name = _sats(call), call.provider.name
    if stop.outcome == Outcome.OVER_BUDGET:
        return Unanswered(
            Outcome.OVER_BUDGET,
            f"The balance at {name} needs a top-up of {sats} sats, which a budget does not "
            f"allow. {stop}",
        )
    if stop.outcome == Outcome.INVOICE_REFUSED:
        return Unanswered(
            Outcome.INVOICE_REFUSED, f"A top-up of {name} ({sats} sats asked) was not paid. {stop}"
        )
    return stop


def _sats(call: Call) -> int:
    """One top-up, in whole sats (what both APIs take): the provider's top-up size, but for a
    payer's request (an agent's step) never more than the price it was approved at: a step
    spends what its owner saw, not the provider's whole top-up (0: not even one sat)."""
    sats = max(call.provider.topup_msat // 1000, 1)
    if call.payer:
        sats = min(sats, call.price_msat // 1000)
    return sats


def _too_small(call: Call, smallest: int) -> Unanswered:
    """Why no top-up is asked for: the smallest the provider takes is more than allowed."""
    name = call.provider.name
    if call.payer and call.price_msat // 1000 < call.provider.topup_msat // 1000:
        return Unanswered(
            Outcome.INVOICE_REFUSED,
            f"The smallest top-up {name} takes is {smallest} sats, more than the "
            f"{call.price_msat / 1000:g} sats approved for this request. Nothing was paid.",
        )
    return Unanswered(
        Outcome.FAILED,
        f"The smallest top-up {name} takes is {smallest} sats; {name}'s top-up is set to "
        f"{_sats(call)} sats. Nothing was paid.",
    )


async def _balance_refresh(api: PrepaidApi, kept: keys.Kept) -> None:
    """The provider's word on the balance; a balance it will not tell is left as it was."""
    try:
        balance = await api.balance(kept.key, sealing.unseal(kept.note.get("credit_id", "")))
    except (ProviderSilent, ProviderRefused):
        return
    await sync_to_async(keys.balance_keep)(kept.id, balance)


def _balance_told(response: httpx2.Response) -> int | None:
    """Routstr's 402 says the balance (msat) in its detail; PPQ's says nothing."""
    try:
        told = response.json()["detail"]["balance"]
    except (ValueError, KeyError, TypeError):
        return None
    believable = isinstance(told, int) and not isinstance(told, bool) and 0 <= told < 1 << 62
    return told if believable else None


def _cost_told(response: httpx2.Response) -> int | None:
    value = response.headers.get(COST_HEADER, "").strip()
    return int(value) if value.isdigit() and len(value) <= 15 else None


def _abandoning(credential_id: int) -> Callable[[], Awaitable[None]]:
    return lambda: sync_to_async(keys.abandon)(credential_id)


def _topup_clearing(credential_id: int, purpose: str) -> Callable[[], Awaitable[None]]:
    return lambda: sync_to_async(keys.topup_clear)(credential_id, purpose)
