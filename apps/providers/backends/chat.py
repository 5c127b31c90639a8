"""An outside provider's model as a ChatBackend: the pipeline asks it as it asks the engine."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from apps.inference.backends.base import BackendRequest, ChatBackend, Events
from apps.providers import calling
from apps.providers.backends.base import Call, ProviderInfo
from apps.providers.kinds import kind_for

PREPARED = "prepared"


class OutsideBackend(ChatBackend):
    """Options the pipeline gives: `request_id`, `price_msat` (the price shown), `origin`,
    `member_id`, `payer` (an agent task whose cap a payment counts against too)."""

    def __init__(self, provider: ProviderInfo) -> None:
        self.provider = provider

    def prepare(self, request: BackendRequest) -> BackendRequest:
        """The egress recorded and the kept credentials read, in the pipeline's own trip to
        the database."""
        prepared = calling.outside_prepared(self._call(request), kind_for(self.provider))
        return replace(request, options={**request.options, PREPARED: prepared})

    async def open(self, request: BackendRequest) -> Events:
        prepared = request.options.get(PREPARED)
        if isinstance(prepared, calling.Prepared):
            return await calling.open_outside(prepared.exchange.call, prepared.kind, prepared)
        return await calling.open_outside(self._call(request), kind_for(self.provider))

    def _call(self, request: BackendRequest) -> Call:
        options = request.options
        return Call(
            provider=self.provider,
            model_id=request.model,
            body=chat_body(request),
            request_id=str(options["request_id"]),
            member_id=options.get("member_id"),
            price_msat=int(options["price_msat"]),
            origin=str(options.get("origin", "api")),
            found=dict(options.get("found", {})),
            redacted=bool(options.get("redacted", False)),
            payer=str(options.get("payer", "")),
        )


def chat_body(request: BackendRequest) -> dict[str, Any]:
    """OpenAI's chat body: always streamed from the provider (the first token's latency is
    part of its record), with the usage at the end."""
    sampling = request.sampling
    body: dict[str, Any] = {
        "model": request.model,
        "messages": request.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": sampling["max_tokens"],
        "temperature": sampling["temperature"],
        "top_p": sampling["top_p"],
    }
    if sampling.get("seed") is not None:
        body["seed"] = sampling["seed"]
    if sampling.get("stop"):
        body["stop"] = list(sampling["stop"])
    if sampling.get("response_format") is not None:
        body["response_format"] = sampling["response_format"]  # as redacted for this provider
    return body
