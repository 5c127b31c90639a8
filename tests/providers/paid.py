"""Asking a paid provider in tests: through the pipeline (streamed, as the chat and /v1 ask) or
straight through `calling.open_outside` (a whole answer), and what the wallet then holds."""

from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import async_to_sync

from apps.inference import pipeline
from apps.inference.answering import Sampling, answer_collected
from apps.inference.backends.base import AnswerRefused, Done, Failed
from apps.providers import calling, services
from apps.providers.backends.base import Call
from apps.providers.kinds import kind_for
from apps.wallet.models import Payment

SAMPLING = Sampling(max_tokens=32, temperature=0.0, top_p=1.0, seed=7)


def ask(member: Any, model: str, question: str = "what is a sat") -> tuple[str, Done | Failed]:
    """A streamed answer through the one answer pipeline."""
    request = pipeline.AnswerRequest(
        member, pipeline.Origin.API, model, [{"role": "user", "content": question}], SAMPLING
    )
    return pipeline.answer_sync(request)


def ask_whole(
    member: Any, provider_name: str, model_id: str, price_msat: int, question: str = "a whole one"
) -> tuple[str, Done | Failed]:
    """A whole (not streamed) answer, asked of the provider straight through calling.py."""
    provider = services.provider_info(services.provider_get(provider_name))
    body = {"model": model_id, "messages": [{"role": "user", "content": question}], "stream": False}
    call = Call(provider, model_id, body, uuid.uuid4().hex, member.pk, price_msat)

    async def whole() -> tuple[str, Done | Failed]:
        try:
            events = await calling.open_outside(call, kind_for(provider))
        except AnswerRefused as refusal:
            return "", Failed(refusal.code, str(refusal))
        return await answer_collected(events)

    return async_to_sync(whole)()


def payments() -> list[Payment]:
    return list(Payment.objects.order_by("id"))


def committed_msat(payment: Payment) -> int:
    """What a payment holds of a budget, as the wallet counts it."""
    if payment.state == Payment.State.PENDING:
        return payment.amount_msat + payment.max_fee_msat
    if payment.state == Payment.State.COMPLETE:
        return payment.amount_msat + (payment.fee_msat or 0)
    return 0
