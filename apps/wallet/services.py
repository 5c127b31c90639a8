"""Paying and being paid through Core Lightning, with a journal that never pays twice.

pay(): checks the invoice, reserves within every budget and writes the payment as pending,
then asks the node (xpay, labelled with the payment's label). An unknown outcome (no answer,
a dropped socket, a crash) leaves it pending; settle() decides it later from the node's own
records (listpays, listsendpays), following lightning.md §4.4: any complete part means paid;
any pending part means in flight; failed only once nothing is pending and either xpay gave
its verdict (an error saying it stopped trying) or the call is long past its deadline.

A row is decided only by the node's records that carry its own label (`sovereign:<purpose>`):
the node pays an invoice once, so a second purpose for the same invoice must never borrow the
first one's preimage. The journal lets one invoice be pending or paid under one purpose only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.wallet import budgets
from apps.wallet.backends import cln
from apps.wallet.backends.cln import NodeMissing, NodeRefused, NodeSilent
from apps.wallet.models import AuditAction, Invoice, Payment, preimage_matches

logger = logging.getLogger(__name__)

# The bolt11 prefix each network's invoices carry (BOLT 11), as `decode` gives it in `currency`.
CURRENCIES = {"bitcoin": "bc", "testnet": "tb", "testnet4": "tb", "signet": "tbs",
              "regtest": "bcrt"}  # fmt: skip
DUPLICATE_LABEL = 900
# xpay's own verdicts: this call has stopped trying (plugins/xpay/xpay.c, v26.06: every
# `payment_give_up` and `command_fail`). -32602 bad parameters; -1 askrene failed to route
# (`getroutes`); -3 an unexpected injectpaymentonion error, such as 200 "still in progress"
# for a payment already in flight; 203 refused by the destination; 205 no route; 206 too
# expensive; 207 expired; 209 gave up after attempts; 217 bad parameters found by askrene;
# 219 already paid. xpay never answers 201 or 210 (those are legacy `pay`'s). -4 "Plugin
# terminated" or a dropped socket say nothing about HTLCs that may still be out. A verdict
# decides nothing by itself: settle() still finds parts in flight or complete first.
XPAY_GAVE_UP = {-32602, -3, -1, 203, 205, 206, 207, 209, 217, 219}
LIGHTNING_URI = "lightning:"
STATUS_WAIT_SECONDS = 1.0  # the most a page waits on the node before showing its last answer
DEADLINE_MARGIN = 5  # seconds past xpay's retry_for before the wallet stops waiting for it


class PaymentRefused(Exception):
    """A check failed before anything was reserved or paid; the message says which."""


class BudgetRefused(PaymentRefused):
    """Paying would pass a budget (the message names which); nothing was reserved."""


class NodeUnavailable(PaymentRefused):
    """The household's own node cannot be asked now; nothing was reserved."""


@dataclass(frozen=True)
class PayOrder:
    bolt11: str
    purpose: str  # paying the same purpose again returns the first payment
    caller: str  # who or what causes it: "member:3", "agent:42", "provider:…"
    max_amount_msat: int  # the quote, or the most the caller will pay
    max_fee_msat: int | None = None  # default: 5 sat or 1 %, whichever is more (as xpay's)
    member: Any = None  # whose allowance it counts against
    token_may_be_live: bool = False  # the preimage will be a credential (L402)
    payer: str = ""  # whom the caller pays for, when someone else: "agent:42" (both caps count)


def invoice_normalised(text: str) -> str:
    """The one form of an invoice used everywhere after the edge (decode, xpay, the journal):
    no surrounding whitespace, no `lightning:` URI prefix (in any case), in lower case, as
    BOLT 11 allows and Core Lightning reads it (`to_canonical_invstr`)."""
    text = text.strip()
    if text[: len(LIGHTNING_URI)].lower() == LIGHTNING_URI:
        text = text[len(LIGHTNING_URI) :].strip()
    return text.lower()


def pay(order: PayOrder) -> Payment:
    order = replace(order, bolt11=invoice_normalised(order.bolt11))
    earlier = payment_for(order.purpose)
    if earlier is not None:
        return _same_invoice(earlier, order)
    invoice = invoice_checked(order)
    fee_limit = order.max_fee_msat
    if fee_limit is None:
        fee_limit = fee_limit_msat(invoice["amount_msat"])
    try:
        payment = budgets.reserve(
            purpose=order.purpose, label=f"sovereign:{order.purpose}", caller=order.caller,
            payer=order.payer, member=order.member, bolt11=order.bolt11,
            payment_hash=invoice["payment_hash"],
            destination=invoice.get("payee", ""), description=invoice.get("description", ""),
            amount_msat=invoice["amount_msat"], max_fee_msat=fee_limit,
            token_may_be_live=order.token_may_be_live,
        )  # fmt: skip
    except budgets.OverBudget as refusal:
        raise BudgetRefused(str(refusal)) from None
    except budgets.InvoiceTaken as taken:
        raise PaymentRefused(_taken_message(taken)) from None
    except IntegrityError:  # the same purpose, paid at this very moment by another caller
        return _same_invoice(Payment.objects.get(purpose=order.purpose), order)
    return send(payment)


def spendable_msat(member: Any, caller: str = "", payer: str = "") -> int | None:
    """What this member may still spend through `caller` (for `payer`) within every budget;
    None: no limit. A check before a request is sent; the reservation when paying decides."""
    return budgets.spendable(caller, member.pk if member is not None else None, payer)


def fee_limit_msat(amount_msat: int) -> int:
    """The most a payment may cost in fees unless its caller says otherwise: 5 sat or 1 %,
    whichever is more (as xpay's own default)."""
    return max(5000, amount_msat // 100)


def payment_for(purpose: str) -> Payment | None:
    return Payment.objects.filter(purpose=purpose).order_by().first()


_PROOF_SQL = "SELECT state, preimage, payment_hash FROM wallet_payment WHERE purpose = %s"


def payment_proof(purpose: str) -> tuple[str, str] | None:
    """A complete payment's state and checked preimage, in one fixed query (every request with
    a kept token asks it); anything else (pending, failed, none) goes through payment_settled."""
    with connection.cursor() as cursor:
        cursor.execute(_PROOF_SQL, [purpose])
        row = cursor.fetchone()
    if row is None or row[0] != Payment.State.COMPLETE or not preimage_matches(row[1], row[2]):
        return None
    return row[0], row[1]


def payment_settled(purpose: str) -> Payment | None:
    """The payment made for `purpose`, decided from the node's records if still pending."""
    payment = payment_for(purpose)
    if payment is not None and payment.state == Payment.State.PENDING:
        payment = settle(payment)
    return payment


def invoice_decode(bolt11: str) -> dict[str, Any]:
    """The node's reading of an invoice; raises NodeRefused when it does not decode."""
    decoded: dict[str, Any] = cln.call("decode", string=invoice_normalised(bolt11))
    return decoded


def _same_invoice(earlier: Payment, order: PayOrder) -> Payment:
    """Paying a purpose again returns its payment, but only for the invoice it paid."""
    if invoice_normalised(earlier.bolt11) != order.bolt11:
        raise PaymentRefused(
            f"The purpose '{order.purpose}' was already used for another invoice (payment "
            f"hash {earlier.payment_hash[:16]}…, {earlier.state}); this invoice was not paid. "
            "Give it a purpose of its own."
        )
    return earlier


def _taken_message(taken: budgets.InvoiceTaken) -> str:
    doing = "was already paid" if taken.state == Payment.State.COMPLETE else "is being paid"
    return (
        f"This invoice {doing} under the purpose '{taken.purpose}'; the node pays an invoice "
        "once, so it is refused here and nothing was reserved."
    )


def invoice_checked(order: PayOrder) -> dict[str, Any]:
    """The node's decoding of the invoice, once every check before paying has passed."""
    if order.max_fee_msat is not None and order.max_fee_msat < 0:
        raise PaymentRefused("The fee limit cannot be negative.")
    try:
        network = node_network()
        invoice = cln.call("decode", string=order.bolt11)
    except NodeRefused as refusal:
        raise PaymentRefused(f"The invoice does not decode: {refusal}") from None
    except (NodeMissing, NodeSilent) as error:
        raise NodeUnavailable(f"Cannot pay now: {error}") from None
    if not invoice.get("valid") or invoice.get("type") != "bolt11 invoice":
        raise PaymentRefused("The node says this is not a valid BOLT11 invoice.")
    if invoice.get("currency") != CURRENCIES.get(network):
        raise PaymentRefused(
            f"The invoice is for another network ({invoice.get('currency')}); "
            f"the node is on {network}."
        )
    _check_terms(invoice, order)
    return invoice


def _check_terms(invoice: dict[str, Any], order: PayOrder) -> None:
    expires = invoice["created_at"] + invoice["expiry"]
    now = int(timezone.now().timestamp())
    if expires <= now:
        raise PaymentRefused(f"The invoice expired {now - expires} seconds ago.")
    if "amount_msat" not in invoice:
        raise PaymentRefused("The invoice has no amount; invoices without one are refused.")
    if invoice["amount_msat"] > order.max_amount_msat:
        raise PaymentRefused(
            f"The invoice asks {invoice['amount_msat']} msat, more than the "
            f"{order.max_amount_msat} msat agreed."
        )


_networks: dict[str, str] = {}  # cln.node_key() -> the network of the node behind it


def node_configured() -> bool:
    """A node is set up (its socket, or CLNRest); it may still not answer."""
    return cln.configured()


def node_network() -> str:
    key = cln.node_key()
    if key not in _networks:
        _networks[key] = str(cln.call("getinfo")["network"])
    return _networks[key]


def send(payment: Payment) -> Payment:
    """Ask the node to pay; whatever happens, the journal row says what is known."""
    try:
        result = cln.call(
            "xpay", timeout=settings.LIGHTNING_PAY_SECONDS + DEADLINE_MARGIN,
            invstring=payment.bolt11, maxfee=payment.max_fee_msat,
            retry_for=settings.LIGHTNING_PAY_SECONDS, label=payment.label,
        )  # fmt: skip
    except NodeRefused as refusal:
        payment.node_answered = refusal.code in XPAY_GAVE_UP
        payment.error = f"{refusal} ({refusal.code})"
        payment.save(update_fields=["node_answered", "error"])
        return settle(payment)
    except (NodeSilent, NodeMissing) as error:
        logger.warning("Payment %s: outcome unknown for now (%s)", payment.label, error)
        return payment  # pending: the reconciler settles it from the node's records
    return _complete(payment, result["payment_preimage"], result["amount_sent_msat"])


def settle(payment: Payment) -> Payment:
    """Decide a pending payment from the node's records; it stays pending while unsure."""
    try:
        pays = cln.call("listpays", payment_hash=payment.payment_hash)["pays"]
        parts = cln.call("listsendpays", payment_hash=payment.payment_hash)["payments"]
    except (NodeMissing, NodeSilent, NodeRefused):
        return payment
    # Only records with this row's label: another purpose's payment of the same invoice
    # (or one made outside Sovereign) never settles this row.
    ours = [p for p in pays if p.get("label") == payment.label]
    our_parts = [p for p in parts if p.get("label") == payment.label]
    done = [p for p in ours if p["status"] == "complete"]
    if done:
        return _complete(payment, done[0]["preimage"], done[0]["amount_sent_msat"])
    done_parts = [p for p in our_parts if p["status"] == "complete"]
    if done_parts:
        sent = sum(p["amount_sent_msat"] for p in done_parts)
        return _complete(payment, done_parts[0]["payment_preimage"], sent)
    if any(p["status"] == "pending" for p in [*ours, *our_parts]):
        return payment
    if payment.proof_holds and not (pays or parts):
        # Paid, proof in hand, and the node has no record of the invoice at all (records
        # deleted, another node): which purpose paid is unknown, and unknown is not failed.
        return payment
    if payment.node_answered or _past_deadline(payment):
        return _fail(payment, _nothing_paid(payment, our_parts, pays))
    return payment


def _nothing_paid(payment: Payment, our_parts: list[Any], pays: list[Any]) -> str:
    """Why a failed payment paid nothing, from the node's own records."""
    others = sorted({str(p.get("label") or "no label") for p in pays} - {payment.label})
    elsewhere = (
        f" The node's records of this invoice carry other labels ({', '.join(others)})."
        if others
        else ""
    )
    if payment.error:  # xpay's own verdict
        return f"{payment.error}: nothing was paid for this purpose.{elsewhere}"
    if our_parts:
        return (
            f"The node tried ({len(our_parts)} part(s) sent) and every attempt failed: "
            f"nothing was paid.{elsewhere}"
        )
    return f"The node has no record of paying it: nothing was paid.{elsewhere}"


def _past_deadline(payment: Payment) -> bool:
    """Long enough after the request that any xpay it started has recorded parts or ended."""
    deadline = 2 * settings.LIGHTNING_PAY_SECONDS + DEADLINE_MARGIN
    return timezone.now() - payment.created_at > timedelta(seconds=deadline)


def _complete(payment: Payment, preimage: str, amount_sent_msat: int) -> Payment:
    if not preimage_matches(preimage, payment.payment_hash):
        logger.error("Payment %s: the node's preimage does not match the hash", payment.label)
        return payment  # never take a wrong proof; stays pending for a person to look at
    settled = {
        "state": Payment.State.COMPLETE,
        "preimage": preimage,
        "fee_msat": amount_sent_msat - payment.amount_msat,
        "settled_at": timezone.now(),
    }
    with transaction.atomic():
        changed = Payment.objects.filter(pk=payment.pk, state=Payment.State.PENDING).update(
            **settled
        )
        if changed:  # audited once, by whoever settled it
            note = f"{payment.audit_note}, fee {settled['fee_msat']} msat"
            _audit(payment, AuditAction.PAYMENT_SENT, note)
    if changed:
        for name, value in settled.items():
            setattr(payment, name, value)
    else:  # settled meanwhile by another process: theirs stands
        payment.refresh_from_db()
    return payment


def _fail(payment: Payment, why: str) -> Payment:
    with transaction.atomic():
        # A failed row holds no proof: a preimage it took from another purpose's payment goes.
        failed = Payment.objects.filter(pk=payment.pk, state=Payment.State.PENDING).update(
            state=Payment.State.FAILED, settled_at=timezone.now(), error=why, preimage=""
        )
        if failed:
            # The node's error text is quoted; an invoice it may echo is not kept in the trail.
            why = why.replace(payment.bolt11, "the invoice")
            _audit(payment, AuditAction.PAYMENT_FAILED, f"{payment.audit_note}: {why}")
    payment.refresh_from_db()
    return payment


def _audit(payment: Payment, action: str, note: str) -> None:
    audit_record(action, actor=payment.caller, subject=payment.purpose, detail=note)


def reconcile() -> dict[str, int]:
    """Settle every pending payment (at the worker's start and periodically)."""
    counts = {"complete": 0, "failed": 0, "pending": 0}
    for payment in Payment.objects.filter(state=Payment.State.PENDING).order_by("id"):
        counts[settle(payment).state] += 1
    return counts


def node_summary(wait: float = STATUS_WAIT_SECONDS) -> dict[str, Any]:
    """The node as the System and Wallet pages show it; `error` when it cannot be reached.

    The pages never wait on the node for more than `wait` seconds: the node is asked in the
    background, and a node that hangs gets its last answer shown, marked `stale`, until the
    question times out (settings.LIGHTNING_TIMEOUT) and the answer says it is not answering.
    """
    with _watches_lock:
        watch = _watches.setdefault(cln.node_key(), _NodeWatch())
    return watch.summary(wait)


class _NodeWatch:
    """The last answer about one node, and the one question to it in flight, if any."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, Any] | None = None
        self.last_at = 0.0
        self.asking: threading.Thread | None = None
        self.asked_at = 0.0

    def summary(self, wait: float) -> dict[str, Any]:
        with self.lock:
            if self.asking is None:
                self.asked_at = time.monotonic()
                self.asking = threading.Thread(target=self._ask, name="node-status", daemon=True)
                self.asking.start()
            asking = self.asking
        asking.join(wait)
        with self.lock:
            if self.asking is None and self.last is not None:
                return {**self.last, "stale": False}
            waited = time.monotonic() - self.asked_at
            if self.last is None:
                error = f"The node has not answered for {waited:.0f} s."
                return {"connected": False, "stale": True, "error": error}
            age = time.monotonic() - self.last_at
            return {**self.last, "stale": True, "answered_seconds_ago": round(age)}

    def _ask(self) -> None:
        answer: dict[str, Any] = {"connected": False, "error": "The node's answer was unreadable."}
        try:
            answer = _node_summary_now()
        except Exception:  # an odd answer must not leave the question in flight for ever
            logger.exception("Asking the node for its status failed")
        finally:
            with self.lock:
                self.last, self.last_at, self.asking = answer, time.monotonic(), None


_watches: dict[str, _NodeWatch] = {}
_watches_lock = threading.Lock()


def _node_summary_now() -> dict[str, Any]:
    try:
        info = cln.call("getinfo")
        channels = cln.call("listpeerchannels")["channels"]
    except (NodeMissing, NodeSilent, NodeRefused) as error:
        return {"connected": False, "error": str(error)}
    usable = [c for c in channels if c.get("state") == "CHANNELD_NORMAL"]
    return {
        "connected": True, "id": info["id"], "alias": info.get("alias", ""),
        "network": info["network"], "channels": len(usable),
        "spendable_msat": sum(int(c.get("spendable_msat", 0)) for c in usable),
        "receivable_msat": sum(int(c.get("receivable_msat", 0)) for c in usable),
    }  # fmt: skip


def timestamp(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def invoice_create(
    amount_msat: int, description: str, *, purpose: str, caller: str, expiry: int = 3600
) -> Invoice:
    """An invoice from the node, to be paid to this node; the same purpose with the same terms
    gives the same one, and different terms under a used purpose are refused."""
    existing = Invoice.objects.filter(purpose=purpose).first()
    if existing is not None:
        what = f"The purpose '{purpose}' already has an invoice"
        _same_terms(what, (existing.amount_msat, existing.description), amount_msat, description)
        return existing
    if amount_msat <= 0:
        raise PaymentRefused("An invoice needs an amount of at least 1 msat.")
    label = f"sovereign:{purpose}"
    try:
        made = cln.call("invoice", amount_msat=amount_msat, label=label,
                        description=description, expiry=expiry)  # fmt: skip
    except NodeRefused as refusal:
        if refusal.code != DUPLICATE_LABEL:
            raise PaymentRefused(f"The node would not make the invoice: {refusal}") from None
        made = _made_before_a_crash(label, amount_msat, description)
    except (NodeMissing, NodeSilent) as error:
        raise PaymentRefused(f"Cannot make an invoice now: {error}") from None
    with transaction.atomic():
        issued = Invoice.objects.create(
            purpose=purpose,
            label=label,
            caller=caller,
            bolt11=made["bolt11"],
            payment_hash=made["payment_hash"],
            description=description,
            amount_msat=amount_msat,
            expires_at=timestamp(made["expires_at"]),
        )
        note = f"{amount_msat} msat, payment hash {issued.payment_hash[:16]}…"
        audit_record(AuditAction.INVOICE_ISSUED, actor=caller, subject=purpose, detail=note)
    return issued


def _made_before_a_crash(label: str, amount_msat: int, description: str) -> dict[str, Any]:
    """The node's invoice under our label, made by a call whose answer was lost; taken up
    only if it asks what this call asks, or the row would not say what the payer pays."""
    try:
        made: dict[str, Any] = cln.call("listinvoices", label=label)["invoices"][0]
    except (NodeMissing, NodeSilent, NodeRefused, IndexError) as error:
        raise PaymentRefused(f"Cannot take up the node's invoice {label}: {error}") from None
    what = f"The node already has an invoice labelled '{label}'"
    _same_terms(what, (made.get("amount_msat"), made.get("description")), amount_msat, description)
    return made


def _same_terms(what: str, found: tuple[Any, Any], amount_msat: int, description: str) -> None:
    if found != (amount_msat, description):
        raise PaymentRefused(
            f"{what} for {found[0]} msat ({found[1]!r}), not {amount_msat} msat "
            f"({description!r}); it is not reused. Give this invoice a purpose of its own."
        )


def invoices_sync() -> int:
    """Learn which unpaid invoices were paid or expired (listinvoices); how many changed."""
    changed = 0
    for invoice in Invoice.objects.filter(state=Invoice.State.UNPAID):
        try:
            found = cln.call("listinvoices", label=invoice.label)["invoices"]
        except (NodeMissing, NodeSilent, NodeRefused):
            return changed
        if found and found[0]["status"] != "unpaid":
            _invoice_settled(invoice, found[0])
            changed += 1
    return changed


def invoice_state_now(invoice: Invoice) -> str | None:
    """The invoice's state as the node says it now (`listinvoices`), settling our row if it
    was paid or expired meanwhile; None when the node does not answer, or no longer lists it
    (autoclean deletes paid invoices too): unknown, not unpaid."""
    if invoice.state != Invoice.State.UNPAID:
        return invoice.state
    try:
        found = cln.call("listinvoices", label=invoice.label)["invoices"]
    except (NodeMissing, NodeSilent, NodeRefused):
        return None
    if not found:
        return None
    if found[0]["status"] != "unpaid":
        _invoice_settled(invoice, found[0])
    invoice.refresh_from_db(fields=["state", "preimage", "amount_received_msat", "paid_at"])
    return invoice.state


def _invoice_settled(invoice: Invoice, found: dict[str, Any]) -> None:
    settled: dict[str, Any] = {"state": Invoice.State.EXPIRED}
    if found["status"] == "paid":
        settled = {
            "state": Invoice.State.PAID,
            "preimage": found["payment_preimage"],
            "amount_received_msat": found["amount_received_msat"],
            "paid_at": timestamp(found["paid_at"]),
        }
    with transaction.atomic():
        # Conditional, so two syncs at once settle (and audit) an invoice only once.
        changed = Invoice.objects.filter(pk=invoice.pk, state=Invoice.State.UNPAID).update(
            **settled
        )
        if changed and settled["state"] == Invoice.State.PAID:
            received = settled["amount_received_msat"]
            note = f"{received} msat received, payment hash {invoice.payment_hash[:16]}…"
            audit_record(
                AuditAction.INVOICE_PAID, actor=invoice.caller, subject=invoice.purpose, detail=note
            )
