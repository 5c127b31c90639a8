"""Answers sold to strangers, through the one pipeline, paid from their balance.

offer_for(model) -> Offer | None        a local model on sale, and at what price
request_max_msat(offer) -> int          what one answer may cost at most (a fresh token's invoice)
reserve_msat(offer) -> int              what an answer reserves first (never above that most)
cost_msat(offer, prompt, completion)    what an answer that used these tokens costs
sold_answer(balance, offer, messages, sampling) -> Sold
    reserves the most the answer may cost (or raises BalanceShort), asks the pipeline as a
    stranger (Origin.SALE: a local model, the strangers' engine lane, nothing kept), and
    when the answer ends charges what it used, records the Sale and gives back the rest; the
    answer's provenance then carries a receipt signed by the node (receipts.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction

from apps.identity import services as identity
from apps.inference import pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import PRIMING, Done, Events, Failed, Token, primed
from apps.sharing import balances, receipts
from apps.sharing.models import Balance, Offer, Sale


class BalanceShort(Exception):
    """The balance cannot pay for the most this answer may cost: a new payment is needed."""

    def __init__(self, balance_msat: int, required_msat: int) -> None:
        super().__init__(f"The balance holds {balance_msat} msat; this request needs up to "
                         f"{required_msat} msat.")  # fmt: skip
        self.balance_msat, self.required_msat = balance_msat, required_msat


def offer_for(model: str) -> Offer | None:
    return Offer.objects.filter(model=model).first()


def request_max_msat(offer: Offer) -> int:
    if offer.per_1k_tokens and offer.max_request_msat is not None:
        return offer.max_request_msat
    return offer.price_msat


def token_price_msat(offer: Offer) -> int:
    """What a fresh L402 or MPP token for this model costs: a few requests at their most."""
    return request_max_msat(offer) * settings.SHARING_TOKEN_REQUESTS


def reserve_msat(offer: Offer) -> int:
    """What an answer takes from the balance before it starts: its most. Priced per 1,000
    tokens, no answer can use more tokens than an engine slot's context holds (prompt and
    completion together), so a token bought for the per-request most pays for several short
    answers, as Aperture meters a bundle; whatever is charged never exceeds this."""
    most = request_max_msat(offer)
    if not offer.per_1k_tokens:
        return most
    return min(most, math.ceil(settings.ENGINE_CONTEXT_PER_SLOT * offer.price_msat / 1000))


def cost_msat(offer: Offer, prompt_tokens: int, completion_tokens: int) -> int:
    """Per request: the price. Per 1,000 tokens: the tokens used, rounded up to the msat, never
    above the per-request most."""
    if not offer.per_1k_tokens:
        return offer.price_msat
    used = math.ceil((prompt_tokens + completion_tokens) * offer.price_msat / 1000)
    return min(used, request_max_msat(offer))


@dataclass
class Sold:
    """A sold answer's events; `sale` is set once it ended and was charged."""

    events: Events
    reserved_msat: int
    sale: Sale | None = None
    prompt_estimate: int = 0  # tokens, for an answer that ends before the engine reports usage


async def sold_answer(
    balance: Balance, offer: Offer, messages: list[dict[str, str]], sampling: Sampling
) -> Sold:
    most = reserve_msat(offer)
    if not await sync_to_async(balances.reserve)(balance, most):
        left = await sync_to_async(balances.balance_now)(balance)
        raise BalanceShort(left, most)
    try:
        owner = await sync_to_async(identity.node_owner)()
        assert owner is not None, "a node sells only once it has an owner"
        asked = pipeline.AnswerRequest(
            owner, pipeline.Origin.SALE, offer.model, messages, sampling, private=True,
            conversation_key=f"balance:{balance.pk}",  # one buyer: reuses only its own cache
        )  # fmt: skip
        events = await pipeline.answer(asked)
    except BaseException:
        await sync_to_async(balances.settle)(balance, most, 0)
        raise
    sold = Sold(events, most, prompt_estimate=prompt_tokens_estimated(messages))
    sold.events = await primed(_charged(sold, balance, offer))
    return sold


def prompt_tokens_estimated(messages: list[dict[str, str]]) -> int:
    """The prompt's tokens when the engine never reported them (an answer cut short or broken
    off): its text's characters over four, a usual English average. The model's tokenizer
    lives in the engine, not in the web server; the per-request most still bounds the charge."""
    return sum(len(str(message.get("content", ""))) for message in messages) // 4


async def _charged(sold: Sold, balance: Balance, offer: Offer) -> Events:
    """The answer's events; at its end, what it used is charged (once, even if the client
    leaves): a Done by its usage; an answer cut short, or broken off (Failed) after it began,
    by its estimated prompt and the tokens it had sent. The engine merges runs of tokens into
    one event and tells no count, so the tokens sent are counted by events: at most what was
    sent, never more."""
    inner, sent, ended = sold.events, 0, False
    try:
        yield PRIMING
        async for event in inner:
            if isinstance(event, Token):
                sent += 1 if event.text else 0
            elif isinstance(event, Done):
                ended = True
                usage = event.usage
                shown = await sync_to_async(_sale_shown)(
                    sold, balance, offer, usage.prompt_tokens, usage.completion_tokens
                )
                event = replace(event, provenance={**event.provenance, **shown})
            elif isinstance(event, Failed):
                ended = True
                await sync_to_async(_cut_short)(sold, balance, offer, sent)
            yield event
    finally:
        if not ended:  # the client left: what was sent is charged
            await sync_to_async(_cut_short)(sold, balance, offer, sent)
        await inner.aclose()


def _sale_record(
    sold: Sold, balance: Balance, offer: Offer, prompt_tokens: int, completion_tokens: int
) -> Sale:
    # What is kept is never above what was reserved: the Sale and its receipt say the same.
    cost = min(cost_msat(offer, prompt_tokens, completion_tokens), sold.reserved_msat)
    with transaction.atomic():  # the charge and its record together: one commit, never one alone
        balances.settle(balance, sold.reserved_msat, cost)
        sold.sale = Sale.objects.create(
            balance=balance,
            model=offer.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_msat=cost,
        )
    return sold.sale


def _cut_short(sold: Sold, balance: Balance, offer: Offer, tokens_sent: int) -> None:
    """Nothing sent: nothing charged. Else the prompt (estimated) and the tokens sent."""
    if tokens_sent == 0:
        balances.settle(balance, sold.reserved_msat, 0)
        return
    _sale_record(sold, balance, offer, sold.prompt_estimate, tokens_sent)


def _sale_shown(
    sold: Sold, balance: Balance, offer: Offer, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """The sale recorded, and what the answer's provenance tells the buyer of it."""
    sale = _sale_record(sold, balance, offer, prompt_tokens, completion_tokens)
    left = balances.balance_now(balance)
    usage = receipts.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    receipt = receipts.sale_receipt(
        _first_payment_hash(balance), sale.cost_msat, offer.model, usage, left
    )
    return {"cost_msat": sale.cost_msat, "balance_msat": left, "receipt": receipt}


def _first_payment_hash(balance: Balance) -> str:
    """The payment that opened the balance: what a receipt names as the buyer's proof."""
    first = balance.credits.select_related("invoice").order_by("pk").first()
    return first.invoice.payment_hash if first is not None else ""
