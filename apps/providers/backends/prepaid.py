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
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import httpx2
from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.providers import paying, secrets
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
from apps.providers.models import Credential, Provider

SCHEME = "Bearer"
COST_HEADER = "X-Routstr-Cost-Msats"
PPQ_MIN_SATS = 100  # PPQ's smallest Lightning top-up
T = TypeVar("T")


@dataclass(frozen=True)
class Kept:
    """A prepaid credential as a request sees it."""

    id: int
    state: str
    key: str  # "" until the provider has given it
    purpose: str  # the payment that bought it
    note: dict[str, Any]
    age_seconds: float

    @property
    def flavour(self) -> Flavour:
        return Flavour(self.note["flavour"])


class PrepaidKind(Kind):
    def __init__(self) -> None:
        self.kept: Kept | None = None
        self.paid_purpose = ""  # the one payment this request made, if any

    async def credentials(self, call: Call) -> Authorization:
        self.kept = await self._usable(call)
        return self._authorization()

    async def on_payment_required(self, call: Call, response: httpx2.Response) -> Authorization:
        challenge = response.headers.get("WWW-Authenticate", "")
        if challenge:
            raise Unanswered(
                Outcome.FAILED,
                f"{call.provider.name} asked for a payment challenge ({challenge.split()[0]}), "
                "which a prepaid provider does not: is it added with the right kind?",
            )
        assert self.kept is not None
        told = _balance_told(response)
        if told is not None:
            await sync_to_async(_balance_keep)(self.kept.id, Balance(msat=told))
        if self.paid_purpose:
            raise Unanswered(
                Outcome.FAILED,
                f"{call.provider.name} says the balance is short right after a top-up of "
                f"{_sats(call)} sats; nothing more is paid for this question. One top-up may be "
                "less than what one request needs there.",
            )
        async with _session(call, self.kept.flavour) as api:
            await self._topup(call, self.kept, api)
        return self._authorization()

    async def on_answer(self, call: Call, response: httpx2.Response) -> None:
        if self.kept is not None:
            cost = _cost_told(response)
            await sync_to_async(_credential_used)(self.kept.id, cost)

    def _authorization(self) -> Authorization:
        assert self.kept is not None
        headers = {"Authorization": f"Bearer {self.kept.key}"}
        return Authorization(headers, payment_purpose=self.paid_purpose)

    # The key -----------------------------------------------------------------------------
    async def _usable(self, call: Call) -> Kept:
        for _attempt in range(3):  # again only after another request's purchase was abandoned
            kept = await sync_to_async(_kept)(call.provider.id)
            if kept is None:
                kept = await self._key_buy(call)
            elif kept.state == Credential.State.PENDING:
                kept = await self._key_finish(call, kept)
            elif kept.note.get("topup"):
                kept = await self._topup_leftover(call, kept)
            if kept is not None:
                return kept
        raise Unanswered(Outcome.FAILED, f"No key could be had from {call.provider.name}.")

    async def _key_buy(self, call: Call) -> Kept | None:
        """Buy this provider's key; None when another request began buying one first."""
        async with _session(call, await sync_to_async(_flavour_known)(call.provider.id)) as api:
            purpose = call.purpose("topup")
            kept, mine = await sync_to_async(_key_claim)(call.provider.id, purpose, api.flavour)
            if not mine:
                return None
            abandon = _abandoning(kept.id)
            if isinstance(api, PPQApi):
                key, credit_id = await _asked(call, api.account_create(), abandon)
                kept = await sync_to_async(_key_live)(kept.id, key, {"credit_id": credit_id})
                await self._topup(call, kept, api)
                return await sync_to_async(_kept)(call.provider.id)
            invoice = await _asked(call, api.topup_invoice(None, _sats(call)), abandon)
            kept = await sync_to_async(_note_merge)(kept.id, {"invoice": asdict(invoice)})
            await self._pay(call, invoice.bolt11, purpose, abandon)
            return await self._key_fetch(call, kept, api)

    async def _key_finish(self, call: Call, pending: Kept) -> Kept | None:
        """A key whose purchase an earlier request began: fetched if its payment went
        through; None when that purchase is abandoned (nothing was paid)."""
        paid = await _payment_ended(call, pending.purpose, pending.age_seconds)
        if not paid or "invoice" not in pending.note:
            await sync_to_async(_abandon)(pending.id)
            return None
        async with _session(call, pending.flavour) as api:
            return await self._key_fetch(call, pending, api)

    async def _key_fetch(self, call: Call, kept: Kept, api: PrepaidApi) -> Kept:
        invoice = TopupInvoice(**kept.note["invoice"])
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
        kept = await sync_to_async(_key_live)(kept.id, key, {"invoice": None})
        await _balance_refresh(api, kept)
        return kept

    # Top-ups -----------------------------------------------------------------------------
    async def _topup(self, call: Call, kept: Kept, api: PrepaidApi) -> None:
        """One top-up of the kept key, paid at most once for this request."""
        purpose = call.purpose("topup")
        for _attempt in range(2):
            earlier = await sync_to_async(_topup_claim)(kept.id, purpose)
            if earlier is None:
                break
            if await self._topup_resume(call, kept, earlier, api):
                return  # another request's top-up went through: the retry needs no payment
        else:
            raise Unanswered(Outcome.FAILED, f"No top-up could be begun at {call.provider.name}.")
        if isinstance(api, PPQApi) and _sats(call) < PPQ_MIN_SATS:
            await sync_to_async(_topup_clear)(kept.id, purpose)
            raise Unanswered(
                Outcome.FAILED,
                f"PPQ's smallest Lightning top-up is {PPQ_MIN_SATS} sats; {call.provider.name}'s "
                f"top-up is set to {_sats(call)} sats. Nothing was paid.",
            )
        clear = _topup_clearing(kept.id, purpose)
        invoice = await _asked(call, api.topup_invoice(kept.key, _sats(call)), clear)
        slot = await sync_to_async(_topup_note)(kept.id, asdict(invoice))
        await self._pay(call, invoice.bolt11, purpose, clear)
        await self._topup_finish(call, kept, slot, api)

    async def _topup_resume(
        self, call: Call, kept: Kept, slot: dict[str, Any], api: PrepaidApi
    ) -> bool:
        """A top-up an earlier request began: True once it is credited; False when it is
        dropped (its payment failed or was never made)."""
        age = timezone.now().timestamp() - float(slot.get("at", 0))
        if await _payment_ended(call, slot["purpose"], age) and "invoice" in slot:
            await self._topup_finish(call, kept, slot, api)
            return True
        await sync_to_async(_topup_clear)(kept.id, slot["purpose"])
        return False

    async def _topup_leftover(self, call: Call, kept: Kept) -> Kept:
        """A top-up a crash or a lost answer left open: finished if it can be now. The key is
        used either way; a top-up still pending does not hold the request up."""
        try:
            async with _session(call, kept.flavour) as api:
                await self._topup_resume(call, kept, kept.note["topup"], api)
        except Unanswered:
            pass
        return await sync_to_async(_kept)(call.provider.id) or kept

    async def _topup_finish(
        self, call: Call, kept: Kept, slot: dict[str, Any], api: PrepaidApi
    ) -> None:
        invoice = TopupInvoice(**slot["invoice"])
        try:
            credited = await api.credited_within(kept.key, invoice)
        except (ProviderSilent, ProviderRefused):
            credited = None
        if credited is None:
            raise Unanswered(
                Outcome.FAILED,
                f"A top-up of {call.provider.name} is paid, but it has not credited it yet. It "
                "is checked again on the next question; it is not paid again.",
            )
        await sync_to_async(_topup_clear)(kept.id, slot["purpose"])
        await _balance_refresh(api, kept)

    async def _pay(
        self, call: Call, bolt11: str, purpose: str, undo: Callable[[], Awaitable[None]]
    ) -> None:
        """Pay a top-up invoice (at most the amount asked); `undo` forgets the purchase when
        nothing was paid. A pending outcome keeps it: the reconciler settles the payment."""
        try:
            await paying.invoice_pay(
                call, bolt11, purpose, live_token=False, max_amount_msat=_sats(call) * 1000
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
    if not number.is_finite() or number < 0:
        return None
    return math.ceil(number * per)


# Talking to the provider -----------------------------------------------------------------
class _session:
    """The provider's prepaid API over a client of its own, for one flow (a key, a top-up);
    the flavour found by asking the provider when none is known yet."""

    def __init__(self, call: Call, flavour: Flavour | None) -> None:
        self.call = call
        self.flavour = flavour
        self.client = httpx2.AsyncClient(follow_redirects=False, trust_env=False)

    async def __aenter__(self) -> PrepaidApi:
        if self.flavour is None:
            try:
                self.flavour = await flavour_detect(self.call.provider, self.client)
            except ProviderRefused as error:
                await self.client.aclose()
                raise Unanswered(Outcome.FAILED, f"{self.call.provider.name}: {error}.") from None
        return APIS[self.flavour](self.call.provider, self.client)

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()


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
                f"A top-up of {call.provider.name} is still being paid. Its outcome is not known "
                "yet; the wallet settles it from the node's records and it is not paid again. "
                "Ask again in a minute.",
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
    """One top-up, in whole sats (what both APIs take)."""
    return max(call.provider.topup_msat // 1000, 1)


async def _balance_refresh(api: PrepaidApi, kept: Kept) -> None:
    """The provider's word on the balance; a balance it will not tell is left as it was."""
    try:
        balance = await api.balance(kept.key, kept.note)
    except (ProviderSilent, ProviderRefused, KeyError):
        return
    await sync_to_async(_balance_keep)(kept.id, balance)


def _balance_told(response: httpx2.Response) -> int | None:
    """Routstr's 402 says the balance (msat) in its detail; PPQ's says nothing."""
    try:
        told = response.json()["detail"]["balance"]
    except (ValueError, KeyError, TypeError):
        return None
    return told if isinstance(told, int) and not isinstance(told, bool) and told >= 0 else None


def _cost_told(response: httpx2.Response) -> int | None:
    value = response.headers.get(COST_HEADER, "").strip()
    return int(value) if value.isdigit() and len(value) <= 15 else None


# The credential rows ---------------------------------------------------------------------
def _as_kept(row: Credential) -> Kept:
    age = (timezone.now() - row.created_at).total_seconds()
    key = secrets.unseal(row.secret_sealed)
    return Kept(row.id, row.state, key, row.payment_purpose, dict(row.note), age)


def _kept(provider_id: int) -> Kept | None:
    """The provider's key (live, or being bought), newest first."""
    row = (
        Credential.objects.filter(provider_id=provider_id, scheme=SCHEME)
        .exclude(state=Credential.State.SPENT)
        .first()
    )
    return None if row is None else _as_kept(row)


def _flavour_known(provider_id: int) -> Flavour | None:
    """The flavour an earlier key of this provider found, so it is not asked again."""
    for note in Credential.objects.filter(provider_id=provider_id).values_list("note", flat=True):
        if isinstance(note, dict) and note.get("flavour") in {f.value for f in Flavour}:
            return Flavour(note["flavour"])
    return None


def _key_claim(provider_id: int, purpose: str, flavour: Flavour) -> tuple[Kept, bool]:
    """The provider's key, or a new pending one this request buys (True): one at a time,
    decided in one transaction (SQLite's IMMEDIATE transactions, PostgreSQL's row lock)."""
    with transaction.atomic():
        list(Provider.objects.select_for_update().filter(id=provider_id))
        kept = _kept(provider_id)
        if kept is not None:
            return kept, False
        row = Credential.objects.create(
            provider_id=provider_id,
            scheme=SCHEME,
            payment_purpose=purpose,
            state=Credential.State.PENDING,
            note={"flavour": str(flavour)},
        )
        return _as_kept(row), True


def _note_merge(credential_id: int, changes: dict[str, Any]) -> Kept:
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        row.note = {k: v for k, v in {**row.note, **changes}.items() if v is not None}
        row.save(update_fields=["note"])
        return _as_kept(row)


def _key_live(credential_id: int, key: str, note: dict[str, Any]) -> Kept:
    """The key is had: sealed, and live (whoever finished the purchase first wrote it)."""
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        if row.state != Credential.State.LIVE:
            row.secret_sealed = secrets.seal(key)
            row.state = Credential.State.LIVE
            row.note = {k: v for k, v in {**row.note, **note}.items() if v is not None}
            row.save(update_fields=["secret_sealed", "state", "note"])
        return _as_kept(row)


def _abandon(credential_id: int) -> None:
    """A purchase that paid nothing is dropped; a later request buys anew."""
    Credential.objects.filter(id=credential_id, state=Credential.State.PENDING).update(
        state=Credential.State.SPENT
    )


def _abandoning(credential_id: int) -> Callable[[], Awaitable[None]]:
    return lambda: sync_to_async(_abandon)(credential_id)


def _topup_claim(credential_id: int, purpose: str) -> dict[str, Any] | None:
    """Write this request's top-up down before anything is asked or paid; an earlier one
    still open is returned instead (one top-up at a time per key)."""
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        earlier = row.note.get("topup")
        if earlier:
            return dict(earlier)
        row.note = {**row.note, "topup": {"purpose": purpose, "at": timezone.now().timestamp()}}
        row.save(update_fields=["note"])
        return None


def _topup_note(credential_id: int, invoice: dict[str, str]) -> dict[str, Any]:
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        slot = {**row.note["topup"], "invoice": invoice}
        row.note = {**row.note, "topup": slot}
        row.save(update_fields=["note"])
        return slot


def _topup_clear(credential_id: int, purpose: str) -> None:
    with transaction.atomic():
        row = Credential.objects.select_for_update().get(id=credential_id)
        if (row.note.get("topup") or {}).get("purpose") == purpose:
            row.note = {k: v for k, v in row.note.items() if k != "topup"}
            row.save(update_fields=["note"])


def _topup_clearing(credential_id: int, purpose: str) -> Callable[[], Awaitable[None]]:
    return lambda: sync_to_async(_topup_clear)(credential_id, purpose)


def _balance_keep(credential_id: int, balance: Balance) -> None:
    if balance.msat is not None:
        Credential.objects.filter(id=credential_id).update(balance_msat=balance.msat)
    if balance.usd is not None:
        _note_merge(credential_id, {"balance_usd": balance.usd})


def _credential_used(credential_id: int, cost_msat: int | None) -> None:
    """An answer came on the key; Routstr's cost header comes off the balance it told."""
    used = Credential.objects.filter(id=credential_id)
    if cost_msat is None:
        used.update(used_at=timezone.now())
        return
    used.filter(balance_msat__isnull=False).update(
        used_at=timezone.now(), balance_msat=F("balance_msat") - cost_msat
    )
    used.filter(balance_msat__isnull=True).update(used_at=timezone.now())
