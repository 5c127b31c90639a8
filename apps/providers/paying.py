"""Paying a provider's invoice through the wallet, for every kind that pays (L402, MPP, top-ups).

The wallet decides everything about money (the invoice's checks, every budget, the journal);
this module turns its answers into what an outside request needs: a preimage to retry with,
or `Unanswered` with the outcome the provider's record keeps. An unknown outcome is never a
failure: the payment stays pending, the request ends, and nothing is paid again for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from asgiref.sync import sync_to_async

from apps.providers.backends.base import Call, Outcome, Unanswered
from apps.wallet import services as wallet
from apps.wallet.backends.cln import NodeMissing, NodeRefused, NodeSilent
from apps.wallet.models import Payment

# How many times one request may pay a new invoice after its earlier payments failed.
RETRIES_AFTER_FAILED = 3
PAID_BEFORE = "This request was paid already and its answer was lost; it is not paid again."


@dataclass(frozen=True)
class PaidInvoice:
    purpose: str
    payment_hash: str
    amount_msat: int
    fee_msat: int
    preimage: str


class PaidBefore(Unanswered):
    """The request's purpose holds a complete payment of another invoice: it is not paid
    again. A kind that kept the credential it paid for may send that instead."""

    def __init__(self, payment: Payment) -> None:
        super().__init__(Outcome.FAILED, PAID_BEFORE)
        self.paid = PaidInvoice(
            payment.purpose,
            payment.payment_hash,
            payment.amount_msat,
            payment.fee_msat or 0,
            payment.preimage,
        )


async def invoice_pay(
    call: Call,
    bolt11: str,
    purpose: str,
    *,
    live_token: bool,
    max_amount_msat: int | None = None,
    retry_failed: bool = True,
) -> PaidInvoice:
    """Pay once for `purpose` (paying it again returns the same payment), for at most the price
    shown (or `max_amount_msat`, the amount a top-up asked for). `retry_failed`: see
    `purpose_to_pay` (a kind that wrote the purpose down before paying passes False)."""
    order = wallet.PayOrder(
        bolt11=bolt11,
        purpose=purpose,
        caller=call.caller,
        payer=call.payer,
        max_amount_msat=call.price_msat if max_amount_msat is None else max_amount_msat,
        member=await _member(call.member_id),
        token_may_be_live=live_token,
    )
    return await sync_to_async(order_paid)(order, retry_failed=retry_failed)


def order_paid(order: wallet.PayOrder, *, retry_failed: bool = True) -> PaidInvoice:
    """Pay a wallet order (once for its purpose), as a request sees it: paid, or Unanswered
    saying why not. For a caller with its own purpose, caller and maximum (an agent's paid
    HTTP step); `invoice_pay` makes the order from a provider's Call."""
    order = replace(order, purpose=purpose_to_pay(order.purpose, order.bolt11, retry_failed))
    try:
        payment = wallet.pay(order)
    except wallet.BudgetRefused as refusal:
        raise Unanswered(Outcome.OVER_BUDGET, f"Not paid: {refusal}") from None
    except wallet.NodeUnavailable as refusal:
        raise Unanswered(Outcome.WALLET_UNAVAILABLE, f"Not paid: {refusal}") from None
    except wallet.PaymentRefused as refusal:
        raise Unanswered(
            Outcome.INVOICE_REFUSED, f"The provider's invoice was refused: {refusal}"
        ) from None
    return paid_or_unanswered(payment)


def paid_or_unanswered(payment: Any) -> PaidInvoice:
    """A wallet payment as a request sees it: paid, or why the request cannot go on."""
    if payment.state == payment.State.COMPLETE:
        return PaidInvoice(
            payment.purpose,
            payment.payment_hash,
            payment.amount_msat,
            payment.fee_msat or 0,
            payment.preimage,
        )
    if payment.state == payment.State.PENDING:
        raise Unanswered(
            Outcome.PAYMENT_PENDING,
            "The payment's outcome is not known yet. It stays pending and the wallet settles it "
            "from the node's records; it will not be paid again. Try again in a minute.",
        )
    raise Unanswered(Outcome.FAILED, f"The payment failed, nothing was paid: {payment.error}")


def purpose_to_pay(purpose: str, bolt11: str, retry_failed: bool = True) -> str:
    """The purpose to pay this invoice under: `purpose` itself, unless an earlier run of the
    same request paid it (or is paying it) with another invoice, as a provider's new 402 after
    a lost answer carries. Then, the earlier payment settled from the node's records first:
    - pending: Unanswered(PAYMENT_PENDING): it may still complete, so nothing more is paid;
    - complete: PaidBefore: paid once, never twice;
    - failed: nothing was paid (a failed row is final: the node has no part of it in flight
      or complete under its label), so the new invoice is paid under the request's next
      purpose (`mpp~2:<provider>:<request id>`, `~3`, …: still ending with the request id).
      Every run walks the same chain, so a pending or complete link still stops it; the
      wallet's journal keeps an invoice to one purpose.
      Without `retry_failed` (the purpose was written down elsewhere before paying, as a
      top-up's is): Unanswered(FAILED), nothing paid."""
    wanted = wallet.invoice_normalised(bolt11)
    for attempt in range(1, RETRIES_AFTER_FAILED + 2):
        candidate = purpose if attempt == 1 else _retry_purpose(purpose, attempt)
        earlier = wallet.payment_for(candidate)
        if earlier is None or wallet.invoice_normalised(earlier.bolt11) == wanted:
            return candidate
        if earlier.state == Payment.State.PENDING:
            earlier = wallet.settle(earlier)
        if earlier.state == Payment.State.PENDING:
            raise Unanswered(
                Outcome.PAYMENT_PENDING,
                "An earlier payment for this request is still pending: its outcome is not known "
                "yet. The wallet settles it from the node's records; nothing more is paid for "
                "this request until then. Try again in a minute.",
            )
        if earlier.state == Payment.State.COMPLETE:
            raise PaidBefore(earlier)
        if not retry_failed:
            raise Unanswered(
                Outcome.FAILED,
                "An earlier payment for this request failed (nothing was paid); this request "
                "pays no other invoice. Ask again.",
            )
    raise Unanswered(
        Outcome.FAILED,
        f"Paying for this request failed {RETRIES_AFTER_FAILED + 1} times; nothing was paid "
        "and no more is tried for it.",
    )


def _retry_purpose(purpose: str, attempt: int) -> str:
    """The request's purpose for its `attempt`-th invoice: the kind's word marked, the rest
    (provider, request id) unchanged, so whatever finds a request's payments by the end of
    their purpose (an agent step's receipts) finds it."""
    what, colon, rest = purpose.partition(":")
    return f"{what}~{attempt}{colon}{rest}"


async def purpose_free(purpose: str, bolt11: str) -> str:
    """`purpose_to_pay`, from async code: a kind writes its credential under the purpose that
    will be paid."""
    return await sync_to_async(purpose_to_pay)(purpose, bolt11)


async def invoice_decoded(bolt11: str) -> dict[str, Any]:
    """The node's own reading of an invoice (never a regex's)."""
    try:
        decoded: dict[str, Any] = await sync_to_async(wallet.invoice_decode)(bolt11)
    except (NodeMissing, NodeSilent) as error:
        raise Unanswered(
            Outcome.WALLET_UNAVAILABLE, f"The household's Lightning node cannot be asked: {error}"
        ) from None
    except NodeRefused as error:
        raise Unanswered(Outcome.INVOICE_REFUSED, f"The invoice does not decode: {error}") from None
    if not decoded.get("valid") or "payment_hash" not in decoded:
        raise Unanswered(Outcome.INVOICE_REFUSED, "The provider's invoice is not valid.")
    return decoded


async def payment_settled(purpose: str) -> PaidInvoice | None:
    """The payment made for `purpose`, asked of the node again if it is still pending; None
    when there is none. Raises Unanswered while its outcome is unknown or when it failed."""
    payment = await sync_to_async(wallet.payment_settled)(purpose)
    return None if payment is None else paid_or_unanswered(payment)


async def _member(member_id: int | None) -> Any:
    if member_id is None:
        return None
    from apps.identity.services import member_by_id

    return await sync_to_async(member_by_id)(member_id)
