"""A paid HTTP request to any URL (an agent's `paid_http` step), through the providers'
L402/MPP client: GET, and on a 402, pay its challenge once under the caller's purpose.

The challenge is read by challenges.py and checked as the provider kinds check theirs (the
node decodes the invoice; an L402 macaroon must carry the invoice's payment hash; no amount,
or more than the step's maximum, is refused before anything is paid). The wallet pays once
for the purpose, under the task's caller (its budget cap is that caller's), and the GET is
sent once more with the credential: `L402 <macaroon>:<preimage>` or MPP's `Payment …`.

Running again after a crash never pays twice. The credential the retry sends is written into
the request's egress row (the privacy page's record of what left: the macaroon or the MPP
challenge, never the preimage, which stays in the wallet) before the payment is sent; a later
run finds the purpose's complete payment and that credential, and only sends the retry. A
pending payment ends the run as unknown; a server offering another invoice for a purpose
already paid is refused by the wallet, nothing paid.

Synchronous: it runs in a Celery worker thread, where no event loop is running.
"""

from __future__ import annotations

import functools
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx2
from asgiref.sync import async_to_sync
from django.conf import settings

from apps.audit.services import audit_record
from apps.privacy import services as privacy
from apps.providers import paying
from apps.providers.backends import l402, mpp
from apps.providers.backends.base import Outcome, Unanswered
from apps.providers.challenges import Challenge, challenges_parsed, l402_challenge
from apps.wallet import services as wallet

ANSWER_BYTES = 1 << 20  # the most of a body kept: an agent's step reads text, not downloads
URL_CHARS = 400  # the egress record keeps the whole URL (every byte that left)
SCHEMES = ("http", "https")
ORIGIN = "agent"
T = TypeVar("T")
CODE_FOR = {
    Outcome.FAILED: "provider_failed",
    Outcome.TIMEOUT: "provider_timeout",
    Outcome.INVOICE_REFUSED: "invoice_refused",
    Outcome.OVER_BUDGET: "over_budget",
    Outcome.PAYMENT_PENDING: "payment_pending",
    Outcome.WALLET_UNAVAILABLE: "wallet_unavailable",
}


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


@dataclass(frozen=True)
class _Request:
    url: str
    purpose: str
    payer: str
    member: Any
    max_price_msat: int


@dataclass(frozen=True)
class _Kept:
    """The credential a paid retry sends, as kept in the egress row (no preimage)."""

    scheme: str  # "L402", "LSAT" or "Payment"
    token: str = ""  # the macaroon, exactly as received
    challenge: dict[str, str] | None = None  # MPP: every parameter, unchanged

    def header(self, preimage: str) -> str:
        if self.scheme == mpp.SCHEME:
            return mpp.charge_credential(Challenge("payment", dict(self.challenge or {})), preimage)
        return f"{self.scheme} {self.token}:{preimage}"

    def recorded(self) -> str:
        kept: dict[str, Any] = {"authorization": self.scheme}
        if self.scheme == mpp.SCHEME:
            kept["challenge"] = self.challenge
        else:
            kept["token"] = self.token
        kept["proof"] = "the payment's preimage (kept in the wallet)"
        return json.dumps(kept, ensure_ascii=False)


def paid_get(url: str, *, purpose: str, payer: str, member: Any, max_price_msat: int) -> PaidAnswer:
    """GET `url`; on a 402, pay its challenge (at most `max_price_msat`, once for `purpose`,
    as `payer` for `member`) and ask again with the credential. Raises PaidHttpFailed."""
    request = _Request(_checked_url(url), purpose, payer, member, max_price_msat)
    egress_id = privacy.egress_begin(_outgoing(request))
    started = time.monotonic()
    try:
        with httpx2.Client(follow_redirects=False, trust_env=False, verify=_tls()) as client:
            answer = _answered(client, request, egress_id)
    except PaidHttpFailed as failed:
        _ended(request, egress_id, failed.code, started)
        raise
    _ended(request, egress_id, Outcome.ANSWERED, started)
    return answer


@functools.cache
def _tls() -> ssl.SSLContext:
    """The CA certificates, loaded once (30–50 ms each time, most of a free request's time);
    an SSLContext is safe to share between threads."""
    return ssl.create_default_context()


def _checked_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise PaidHttpFailed(
            "Only http and https addresses can be asked; nothing was sent.", "bad_request"
        )
    if len(url) > URL_CHARS:
        raise PaidHttpFailed(
            f"The address is longer than {URL_CHARS} characters; nothing was sent.", "bad_request"
        )
    return url


def _outgoing(request: _Request) -> privacy.Outgoing:
    """The egress row: a GET sends only its URL (and, paid, a credential: written later)."""
    return privacy.Outgoing(
        member_id=getattr(request.member, "pk", None),
        origin=ORIGIN,
        provider=(urlsplit(request.url).hostname or "")[:40],
        url=request.url,
        model="",
        body="",
        request_id=request.purpose[:64],
        found={},
        redacted=False,
    )


def _answered(client: httpx2.Client, request: _Request, egress_id: int) -> PaidAnswer:
    """The answer: straight away, with a credential an earlier run paid for, or by paying."""
    earlier = _earlier_payment(request.purpose)
    kept = _kept(request.purpose) if earlier is not None else None
    if earlier is not None and kept is not None:
        return _retried(client, request, kept, earlier)
    response = _get(client, request.url, {})
    if response.status_code != 402:
        return _answer(response, 0, "")
    response.close()  # the challenge is in the headers
    kept, bolt11 = _challenge_checked(response, request.max_price_msat)
    paid = _paid(request, egress_id, kept, bolt11)
    return _retried(client, request, kept, paid)


def _earlier_payment(purpose: str) -> paying.PaidInvoice | None:
    """A payment already made for this purpose (a run before a crash), asked of the node if
    still pending; raises PaidHttpFailed while it is unknown, or if it failed."""
    payment = wallet.payment_settled(purpose)
    return None if payment is None else _or_failed(lambda: paying.paid_or_unanswered(payment))


def _kept(purpose: str) -> _Kept | None:
    """The credential an earlier run recorded before paying for this purpose; None if lost."""
    try:
        kept = json.loads(privacy.egress_body_of(purpose[:64]) or "null")
        scheme = str(kept["authorization"])
        if scheme == mpp.SCHEME:
            challenge = kept["challenge"]
            if not isinstance(challenge, dict):
                raise TypeError
            return _Kept(scheme, challenge={str(k): str(v) for k, v in challenge.items()})
        return _Kept(scheme, token=str(kept["token"]))
    except (ValueError, KeyError, TypeError):
        return None


def _challenge_checked(response: httpx2.Response, max_price_msat: int) -> tuple[_Kept, str]:
    """The credential to retry with and the invoice to pay, once the challenge's checks pass
    (L402 first, then an MPP Lightning charge); PaidHttpFailed otherwise, nothing paid."""
    offered = challenges_parsed(response.headers.get_list("www-authenticate"))
    token = l402_challenge(offered)
    if token is not None:
        _or_failed(lambda: async_to_sync(l402.invoice_checked)(token, max_price_msat))
        return _Kept(token.scheme, token=token.token), token.invoice
    charge = mpp.charge_challenge(offered)
    if charge is not None:
        bolt11 = _or_failed(
            lambda: async_to_sync(mpp.charge_invoice_checked)(charge, max_price_msat)
        )
        return _Kept(mpp.SCHEME, challenge=dict(charge.params)), bolt11
    raise PaidHttpFailed(
        "The server asked to be paid without an L402 or Lightning charge challenge; nothing "
        "was paid.",
        "provider_failed",
    )


def _paid(request: _Request, egress_id: int, kept: _Kept, bolt11: str) -> paying.PaidInvoice:
    """Pay once for the purpose, the credential written first: a crash after paying leaves
    what the next run needs to use the payment rather than pay again."""
    privacy.egress_body_set(egress_id, kept.recorded())
    order = wallet.PayOrder(
        bolt11=bolt11,
        purpose=request.purpose,
        caller=request.payer,
        max_amount_msat=request.max_price_msat,
        member=request.member,
        token_may_be_live=kept.scheme != mpp.SCHEME,  # an L402 token may be a balance
    )
    try:
        return paying.order_paid(order)
    except Unanswered as unanswered:
        if unanswered.outcome != Outcome.PAYMENT_PENDING:
            privacy.egress_body_set(egress_id, "")  # nothing was paid: the retry is not sent
        raise _failed(unanswered) from None


def _retried(
    client: httpx2.Client, request: _Request, kept: _Kept, paid: paying.PaidInvoice
) -> PaidAnswer:
    response = _get(client, request.url, {"Authorization": kept.header(paid.preimage)})
    if response.status_code == 402:
        response.close()
        raise PaidHttpFailed(
            "The server asked to be paid again right after being paid; nothing more was paid.",
            "provider_failed",
        )
    return _answer(response, paid.amount_msat + paid.fee_msat, paid.payment_hash)


def _get(client: httpx2.Client, url: str, headers: dict[str, str]) -> httpx2.Response:
    """The response, its headers read and its body not yet (the caller reads it, bounded)."""
    timeout = httpx2.Timeout(float(settings.PROVIDER_TIMEOUT_SECONDS))
    try:
        response = client.send(
            client.build_request("GET", url, headers=headers, timeout=timeout), stream=True
        )
    except httpx2.TimeoutException:
        raise PaidHttpFailed("The server did not answer in time.", "provider_timeout") from None
    except httpx2.HTTPError as error:
        message = f"The server cannot be reached ({error})."
        raise PaidHttpFailed(message, "provider_failed") from None
    return response


def _answer(response: httpx2.Response, cost_msat: int, payment_hash: str) -> PaidAnswer:
    """A 200's body as text; any other status fails (what was paid stays paid, and counted)."""
    try:
        if response.status_code != 200:
            raise PaidHttpFailed(
                f"The server answered {response.status_code}"
                + (f" after {cost_msat} msat were paid." if cost_msat else "."),
                "provider_failed",
            )
        raw = _bounded(response, ANSWER_BYTES)
    finally:
        response.close()
    text = raw.decode(_charset(response), "replace")
    return PaidAnswer(response.status_code, text, cost_msat, payment_hash)


def _bounded(response: httpx2.Response, limit: int) -> bytes:
    """The body, read as it comes and refused past `limit` bytes (then closed)."""
    received: list[bytes] = []
    size = 0
    deadline = time.monotonic() + float(settings.PROVIDER_TIMEOUT_SECONDS)
    try:
        for part in response.iter_bytes():
            size += len(part)
            if time.monotonic() > deadline:  # a server dripping bytes is not waited for
                response.close()
                raise PaidHttpFailed("The server's answer took too long.", "provider_timeout")
            if size > limit:
                response.close()
                raise PaidHttpFailed(
                    f"The answer is larger than {limit // 1024} KiB; it was not read.",
                    "provider_failed",
                )
            received.append(part)
    except httpx2.TimeoutException:
        raise PaidHttpFailed("The server stopped answering.", "provider_timeout") from None
    except httpx2.HTTPError:
        raise PaidHttpFailed("The server's answer broke off.", "provider_failed") from None
    return b"".join(received)


def _charset(response: httpx2.Response) -> str:
    charset = response.charset_encoding or "utf-8"
    try:
        "".encode(charset)
    except LookupError:
        return "utf-8"
    return charset


def _or_failed(work: Callable[[], T]) -> T:
    """What `work()` returns, its Unanswered as PaidHttpFailed."""
    try:
        return work()
    except Unanswered as unanswered:
        raise _failed(unanswered) from None


def _failed(unanswered: Unanswered) -> PaidHttpFailed:
    code = CODE_FOR.get(unanswered.outcome, "provider_failed")
    return PaidHttpFailed(
        str(unanswered), code, unknown=unanswered.outcome == Outcome.PAYMENT_PENDING
    )


def _ended(request: _Request, egress_id: int, outcome: str, started: float) -> None:
    """The egress row completed (what was paid for the purpose, and its hash) and an audit row."""
    cost, payment_hash = _paid_for(request.purpose)
    privacy.egress_end(egress_id, outcome=str(outcome), cost_msat=cost, payment_hash=payment_hash)
    member_id = getattr(request.member, "pk", None)
    audit_record(
        "outside_request",
        actor=f"member:{member_id}" if member_id else "",
        subject=(urlsplit(request.url).hostname or "")[:100],
        detail=f"{outcome}, {cost} msat, {ORIGIN} paid GET for {request.payer}, "
        f"{round((time.monotonic() - started) * 1000)} ms",
    )


def _paid_for(purpose: str) -> tuple[int, str]:
    payment = wallet.payment_for(purpose)
    if payment is None or payment.state == payment.State.FAILED:
        return 0, ""
    return payment.amount_msat + (payment.fee_msat or 0), payment.payment_hash
