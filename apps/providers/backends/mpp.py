"""MPP, the "Payment" HTTP authentication scheme, Lightning method, `charge` intent: every
request pays its own invoice (lightning.md §1.5; the draft Aperture serves).

On a 402 with `WWW-Authenticate: Payment … method="lightning", intent="charge"`, the `request`
parameter (base64url JSON: amount, currency, methodDetails.invoice and paymentHash) is read and
checked against the price shown, and the node's own reading of the invoice against the request
(the same amount, the same payment hash) before anything is paid. The retry carries
`Authorization: Payment <base64url JSON {"challenge": {every parameter, unchanged},
"payload": {"preimage": …}}>`.

What is kept: a Credential row (scheme "Payment"), written pending before paying like every
bought credential, marked spent once paid (a charge is never presented twice); its note holds
the challenge's id and, when the answer comes, the provider's `Payment-Receipt` (decoded, with
the raw header) beside the wallet's proof of payment, found by the same purpose.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

import httpx2
from asgiref.sync import sync_to_async

from apps.providers import credentials, paying
from apps.providers.backends.base import Authorization, Call, Kind, Outcome, Unanswered
from apps.providers.challenges import Challenge, challenges_parsed
from apps.providers.models import Credential

SCHEME = "Payment"
RECEIPT_BYTES = 4096
# What one unit of the request's currency is in msat.
MSAT_PER = {"sat": 1000, "msat": 1}


class MppKind(Kind):
    def __init__(self) -> None:
        self._bought: dict[str, int] = {}  # request id -> the credential paid for it

    async def credentials(self, call: Call) -> Authorization:
        return self.credentials_now(call)

    def credentials_now(self, call: Call) -> Authorization:
        return Authorization({})  # a charge pays for one request: nothing is reused

    async def on_payment_required(self, call: Call, response: httpx2.Response) -> Authorization:
        offered = challenges_parsed(response.headers.get_list("www-authenticate"))
        challenge = charge_challenge(offered)
        if challenge is None:
            raise Unanswered(
                Outcome.FAILED,
                "The provider asked to be paid without a Lightning charge challenge; nothing "
                "was paid.",
            )
        bolt11 = await charge_invoice_checked(challenge, call.price_msat)
        try:
            purpose = await paying.purpose_free(call.purpose("mpp"), bolt11)
        except paying.PaidBefore as before:
            return await self._paid_before(call, before)
        # Every parameter is kept (none is secret): a run that loses the answer after paying
        # can send the same credential again rather than pay anew.
        note = {"challenge_id": challenge.params.get("id", ""), "challenge": challenge.params}
        credential_id = await sync_to_async(credentials.credential_open)(
            call.provider.id,
            SCHEME,
            "",
            purpose,
            note,  # the preimage is the only secret
        )
        try:
            paid = await paying.invoice_pay(call, bolt11, purpose, live_token=False)
        except Unanswered as unanswered:
            if unanswered.outcome != Outcome.PAYMENT_PENDING:
                await sync_to_async(credentials.credential_spent)(credential_id)
            raise
        await sync_to_async(credentials.credential_spent)(credential_id)
        self._bought[call.request_id] = credential_id
        header = charge_credential(challenge, paid.preimage)
        return Authorization({"Authorization": header}, payment_purpose=purpose)

    async def _paid_before(self, call: Call, before: paying.PaidBefore) -> Authorization:
        """An earlier run of this request paid a charge and lost the answer: the credential it
        paid for is sent again if its challenge was kept (the provider decides whether it still
        takes it); otherwise the request ends, never paying twice."""
        kept = await sync_to_async(_kept_challenge)(call.provider.id, before.paid.purpose)
        if kept is None:
            raise before
        credential_id, params = kept
        self._bought[call.request_id] = credential_id
        header = charge_credential(Challenge("payment", params), before.paid.preimage)
        return Authorization({"Authorization": header}, payment_purpose=before.paid.purpose)

    async def on_answer(self, call: Call, response: httpx2.Response) -> None:
        credential_id = self._bought.pop(call.request_id, None)
        raw = response.headers.get("payment-receipt", "")
        if credential_id is None or not raw:
            return
        kept = {"receipt": receipt_read(raw), "receipt_header": raw[:RECEIPT_BYTES]}
        await sync_to_async(credentials.credential_noted)(credential_id, kept)


def _kept_challenge(provider_id: int, purpose: str) -> tuple[int, dict[str, str]] | None:
    """The credential written before paying for `purpose`, with its challenge's parameters."""
    row = (
        Credential.objects.filter(provider_id=provider_id, scheme=SCHEME, payment_purpose=purpose)
        .order_by("-id")
        .first()
    )
    params = (row.note or {}).get("challenge") if row is not None else None
    if row is None or not isinstance(params, dict):
        return None
    return row.pk, {str(key): str(value) for key, value in params.items()}


def charge_challenge(challenges: list[Challenge]) -> Challenge | None:
    """The first `Payment` challenge for a Lightning charge with the parameters it needs."""
    for challenge in challenges:
        params = challenge.params
        if (
            challenge.scheme == "payment"
            and params.get("method", "").lower() == "lightning"
            and params.get("intent", "").lower() == "charge"
            and params.get("id")
            and params.get("request")
        ):
            return challenge
    return None


def charge_request(challenge: Challenge) -> dict[str, Any]:
    """The `request` parameter's JSON, or Unanswered when it is not a Lightning charge."""
    try:
        request = json.loads(b64url_decoded(challenge.params["request"]))
        details = request["methodDetails"]
        if not isinstance(details, dict) or not isinstance(details["invoice"], str):
            raise TypeError
        msat = int(request["amount"]) * MSAT_PER[str(request.get("currency", "sat")).lower()]
    except (ValueError, KeyError, TypeError, OverflowError):
        raise _refused("is unreadable") from None
    return {**request, "amount_msat": msat}


def charge_credential(challenge: Challenge, preimage: str) -> str:
    """The `Authorization` value that answers a paid charge: every challenge parameter,
    unchanged, and the preimage."""
    answer = {"challenge": challenge.params, "payload": {"preimage": preimage}}
    return f"{SCHEME} {b64url(json.dumps(answer, separators=(',', ':')).encode())}"


async def charge_invoice_checked(challenge: Challenge, price_msat: int) -> str:
    """The invoice to pay, once the request and the node's reading of the invoice agree with
    each other and with the price shown; otherwise Unanswered, nothing paid."""
    request = charge_request(challenge)
    _not_expired(challenge)
    if request["amount_msat"] > price_msat:
        raise _refused(f"asks {request['amount_msat']} msat, more than the {price_msat} shown")
    details = request["methodDetails"]
    invoice = await paying.invoice_decoded(details["invoice"])
    if invoice.get("amount_msat") != request["amount_msat"]:
        raise _refused("has an invoice whose amount is not the one it asks")
    if details.get("paymentHash", invoice["payment_hash"]) != invoice["payment_hash"]:
        raise _refused("names another payment hash than its invoice's")
    return str(details["invoice"])


def _not_expired(challenge: Challenge) -> None:
    expires = challenge.params.get("expires")
    if not expires:
        return
    try:
        moment = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    except ValueError:
        raise _refused("has an unreadable expiry") from None
    if moment.tzinfo is None or moment <= datetime.now(UTC):
        raise _refused("has expired")


def _refused(why: str) -> Unanswered:
    return Unanswered(
        Outcome.INVOICE_REFUSED, f"The provider's payment request {why}; nothing was paid."
    )


def receipt_read(raw: str) -> dict[str, Any] | None:
    """The receipt's JSON, or None when it is not base64url JSON (the raw header is kept)."""
    try:
        receipt = json.loads(b64url_decoded(raw.strip()))
    except ValueError:
        return None
    return receipt if isinstance(receipt, dict) else None


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64url_decoded(text: str) -> bytes:
    """base64url with or without padding (ValueError otherwise)."""
    text = text.strip()
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:  # ValueError: a character beyond ASCII
        raise ValueError(str(error)) from None
