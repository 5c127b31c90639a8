"""L402 (and its legacy name LSAT): pay the 402's invoice, keep the token, reuse it.

As Aperture meters AI endpoints, a kept token is a key to a prepaid balance, not a one-shot
ticket: every request presents the newest live token, and a 402 on it means the balance is
used up, so it is marked spent and a new one is bought (within the wallet's budgets, under this
request's own purpose: one request never pays twice). Before paying, the token is written
`pending` with the payment's purpose; a crash after paying leaves a row that becomes live once
the wallet settles the payment from the node's records, and is then used, not bought again.

Checks before paying (lightning.md §1.6): the invoice is decoded by the node; when the macaroon's
identifier carries a payment hash it must be the invoice's; an invoice with no amount or above
the price shown is refused. The retry says `L402 <token exactly as received>:<hex preimage>`,
`LSAT` only when the server offered nothing else.

Prices: `manifest_prices` reads the agent-spec manifest `/.well-known/l402.json`
(`services[].resources[].pricing`, model `fixed`), which the catalog adds to `/v1/models`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx2
from asgiref.sync import sync_to_async
from django.utils import timezone

from apps.providers import credentials, paying
from apps.providers.backends.base import Authorization, Call, Kind, Outcome, Unanswered
from apps.providers.challenges import (
    L402Challenge,
    challenges_parsed,
    l402_challenge,
    macaroon_payment_hash,
)
from apps.providers.credentials import Kept
from apps.providers.fetching import FetchFailed, json_fetched
from apps.wallet import services as wallet

SCHEMES = ("L402", "LSAT")
# How long a request waits for a token another request is buying before it gives up rather
# than buying one more (a payment in flight usually settles in well under a second).
PENDING_WAIT_SECONDS = 3.0
PENDING_POLL_SECONDS = 0.05
# A pending token whose payment the wallet never recorded: a crash came between writing it
# and paying. Young, its payment may be about to be reserved (the node decodes the invoice
# first, within LIGHTNING_TIMEOUT); after this, nothing was paid for it.
ABANDONED_AFTER = timedelta(seconds=60)
MANIFEST_PATH = "/.well-known/l402.json"
MANIFEST_BYTES = 1 << 20
CHAT_PATH = "/v1/chat/completions"
EVERY_MODEL = "*"  # a manifest price that names no model


class L402Kind(Kind):
    def __init__(self) -> None:
        self._tried: dict[str, int] = {}  # request id -> the kept token its first attempt used

    async def credentials(self, call: Call) -> Authorization:
        kept = await _kept_token(call.provider.id)
        if kept is None:
            return Authorization({})
        token, preimage = kept
        self._tried[call.request_id] = token.id
        return Authorization({"Authorization": f"{token.scheme} {token.secret}:{preimage}"})

    def credentials_now(self, call: Call) -> Authorization | None:
        """A live kept token whose payment the journal holds as complete; else None (no
        token, or one still being paid: `credentials` waits for it)."""
        usable = _token_now(call.provider.id, ask_node=False)
        if isinstance(usable, bool):
            return None
        token, preimage = usable
        self._tried[call.request_id] = token.id
        return Authorization({"Authorization": f"{token.scheme} {token.secret}:{preimage}"})

    async def on_payment_required(self, call: Call, response: httpx2.Response) -> Authorization:
        tried = self._tried.pop(call.request_id, None)
        if tried is not None:  # the kept token's balance is used up
            await sync_to_async(credentials.credential_spent)(tried)
        offered = challenges_parsed(response.headers.get_list("www-authenticate"))
        challenge = l402_challenge(offered)
        if challenge is None:
            raise Unanswered(
                Outcome.FAILED,
                "The provider asked to be paid without an L402 challenge; nothing was paid.",
            )
        await invoice_checked(challenge, call.price_msat)
        # Another invoice than an earlier run's: pending or paid, that one stands (Unanswered).
        purpose = await paying.purpose_free(call.purpose("l402"), challenge.invoice)
        token_id = await sync_to_async(credentials.credential_open)(
            call.provider.id, challenge.scheme, challenge.token, purpose
        )
        paid = await _paid(call, challenge, purpose, token_id)
        await sync_to_async(credentials.credential_live)(token_id)
        header = f"{challenge.scheme} {challenge.token}:{paid.preimage}"
        return Authorization({"Authorization": header}, payment_purpose=purpose)

    async def on_refused(self, call: Call, response: httpx2.Response) -> None:
        """A 401 on a kept token: the provider will not take it; the next request buys anew."""
        tried = self._tried.pop(call.request_id, None)
        if tried is not None and response.status_code == 401:
            await sync_to_async(credentials.credential_spent)(tried)

    async def on_answer(self, call: Call, response: httpx2.Response) -> None:
        self._tried.pop(call.request_id, None)


async def invoice_checked(challenge: L402Challenge, price_msat: int) -> None:
    """Refuse, before anything is written or paid, an invoice that is not this token's, has
    no amount, or asks more than the price shown (the wallet checks the amount again)."""
    invoice = await paying.invoice_decoded(challenge.invoice)
    bound = macaroon_payment_hash(challenge.token)
    if bound is not None and bound != invoice["payment_hash"]:
        raise Unanswered(
            Outcome.INVOICE_REFUSED,
            "The provider's token is bound to another payment than its invoice; nothing was paid.",
        )
    amount = invoice.get("amount_msat")
    if not isinstance(amount, int) or amount <= 0:
        raise Unanswered(
            Outcome.INVOICE_REFUSED, "The provider's invoice has no amount; nothing was paid."
        )
    if amount > price_msat:
        raise Unanswered(
            Outcome.INVOICE_REFUSED,
            f"The provider's invoice asks {amount} msat, more than the {price_msat} msat "
            "shown; nothing was paid.",
        )


async def _paid(
    call: Call, challenge: L402Challenge, purpose: str, token_id: int
) -> paying.PaidInvoice:
    try:
        return await paying.invoice_pay(call, challenge.invoice, purpose, live_token=True)
    except Unanswered as unanswered:
        # Refused or failed: nothing was paid, the token is worthless. An unknown outcome
        # leaves it pending, for the wallet's settling to make live (or spent) later.
        if unanswered.outcome != Outcome.PAYMENT_PENDING:
            await sync_to_async(credentials.credential_spent)(token_id)
        raise


async def _kept_token(provider_id: int) -> tuple[Kept, str] | None:
    """The newest kept token that can be used now, with its preimage; None when there is none.
    A token whose payment is in flight is waited for a little, then the request ends rather
    than buying another while that one may still be paid."""
    deadline = time.monotonic() + PENDING_WAIT_SECONDS
    ask_node = True  # once: while waiting, the database says when another request settles it
    while True:
        usable = await sync_to_async(_token_now)(provider_id, ask_node)
        ask_node = False
        if not isinstance(usable, bool):
            return usable
        if not usable:
            return None
        if time.monotonic() > deadline:
            raise Unanswered(
                Outcome.PAYMENT_PENDING,
                "A token bought from this provider is still being paid; its outcome is not "
                "known yet. It will not be bought twice: try again in a minute.",
            )
        await asyncio.sleep(PENDING_POLL_SECONDS)


def _token_now(provider_id: int, ask_node: bool) -> tuple[Kept, str] | bool:
    """A token usable now, with its preimage (in one trip to the database thread: every
    request with a kept token asks this); else whether one is being paid."""
    waiting = False
    for token in credentials.credentials_unspent(provider_id, SCHEMES):
        preimage, in_flight = _preimage(token, ask_node)
        if preimage is not None:
            credentials.credential_used(token)
            return token, preimage
        waiting = waiting or in_flight
    return waiting


def _preimage(token: Kept, ask_node: bool) -> tuple[str | None, bool]:
    """The preimage of a token whose payment is complete (a pending token becomes live), or
    None and whether its payment may still complete."""
    proof = wallet.payment_proof(token.payment_purpose) if token.state == "live" else None
    if proof is not None:
        return proof[1], False
    settled = wallet.payment_settled if ask_node else wallet.payment_for
    payment = settled(token.payment_purpose)
    if payment is not None:
        try:
            paid = paying.paid_or_unanswered(payment)
        except Unanswered as unanswered:
            if unanswered.outcome == Outcome.PAYMENT_PENDING:
                return None, True
            credentials.credential_spent(token.id)  # failed: nothing was paid
            return None, False
        if token.state == credentials.State.PENDING:
            credentials.credential_live(token.id)
        return paid.preimage, False
    # No payment under its purpose: a crash came between writing the token and paying, or
    # the payment is about to start. Old, nothing was paid for it.
    if (
        token.state == credentials.State.PENDING
        and timezone.now() - token.created_at < ABANDONED_AFTER
    ):
        return None, True
    credentials.credential_spent(token.id)
    return None, False


# Prices ------------------------------------------------------------------------------------


def manifest_prices(base_url: str, timeout: float = 10.0) -> dict[str, int] | None:
    """Fixed prices per request from the provider's agent-spec manifest, by model id (the
    resource's `capability`; `EVERY_MODEL` for a chat resource that names none); None when
    there is no manifest or it prices nothing. Prices are advisory: the invoice decides, and
    an invoice above the price shown is refused."""
    try:
        manifest = json_fetched(
            f"{base_url}{MANIFEST_PATH}", headers={}, timeout=timeout, limit=MANIFEST_BYTES
        )
    except FetchFailed:
        return None
    return manifest_read(manifest)


def manifest_read(manifest: Any) -> dict[str, int] | None:
    prices: dict[str, int] = {}
    services = manifest.get("services") if isinstance(manifest, dict) else None
    for service in services if isinstance(services, list) else []:
        resources = service.get("resources") if isinstance(service, dict) else None
        for resource in resources if isinstance(resources, list) else []:
            priced = _fixed_price(resource)
            if priced is not None:
                prices[priced[0]] = priced[1]
    return prices or None


def _fixed_price(resource: Any) -> tuple[str, int] | None:
    if not isinstance(resource, dict) or resource.get("path", CHAT_PATH) != CHAT_PATH:
        return None
    pricing = resource.get("pricing")
    if not isinstance(pricing, dict) or pricing.get("model") != "fixed":
        return None
    price = pricing.get("price_msat")
    if isinstance(price, bool) or not isinstance(price, int) or price < 0:
        return None
    model = resource.get("capability")
    return (model if isinstance(model, str) and model else EVERY_MODEL), price
