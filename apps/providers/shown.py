"""How a provider is shown to people, the same on the Providers page and in `manage.py providers
list`: its models with the price of one request, its record, and what the node keeps bought
from it. Nothing here reads or shows a secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from apps.providers import services
from apps.providers.models import Provider, ProviderModel
from apps.wallet.templatetags.wallet import sats


@dataclass(frozen=True)
class ModelShown:
    name: str  # <provider>/<model id>, as the chat and /v1 take it
    price: str  # what one request costs at most, for people
    context_length: int | None


@dataclass(frozen=True)
class ProviderShown:
    name: str
    kind: str  # the kind's value: l402, mpp, prepaid, openai
    kind_label: str
    base_url: str
    has_api_key: bool
    catalog_fetched_at: datetime | None
    catalog_error: str
    models: list[ModelShown]
    record: services.Reputation
    credentials_kept: int
    balance_msat: int | None  # the provider's last word on the kept balances, if it gave one

    @property
    def record_line(self) -> str:
        return record_line(self.record)


def providers_shown() -> list[ProviderShown]:
    return [provider_shown(provider) for provider in services.providers_list()]


def provider_shown(provider: Provider) -> ProviderShown:
    kept = services.credentials_live(provider.pk)
    balances = [
        credential.balance_msat for credential in kept if credential.balance_msat is not None
    ]
    return ProviderShown(
        name=provider.name,
        kind=provider.kind,
        kind_label=provider.get_kind_display(),
        base_url=provider.base_url,
        has_api_key=bool(provider.secret_sealed),
        catalog_fetched_at=provider.catalog_fetched_at,
        catalog_error=provider.catalog_error,
        models=[model_shown(model) for model in provider.models.all()],
        record=services.reputation(provider),
        credentials_kept=len(kept),
        balance_msat=sum(balances) if balances else None,
    )


def model_shown(model: ProviderModel) -> ModelShown:
    return ModelShown(model.name, price_text(model), model.context_length)


def price_text(model: ProviderModel) -> str:
    """The most one request costs, as the chat shows it before asking: a fixed price, per-token
    prices worked out for the longest default answer, or the node's own cap when the provider
    publishes no price."""
    if not model.provider.pays:
        return "free (home network)"
    max_tokens = settings.ENGINE_DEFAULT_MAX_TOKENS
    price = sats(model.price_msat(max_tokens))
    if model.request_msat is not None:
        return f"{price} a request"
    if model.prompt_msat_per_1k is None and model.completion_msat_per_1k is None:
        return f"up to {price} a request (no published price: the node's cap)"
    return f"up to {price} a request of {max_tokens} tokens"


def record_line(record: services.Reputation) -> str:
    parts = [
        _count(record.requests, "request"),
        _count(record.failures, "failure"),
        _count(record.timeouts, "timeout"),
        _count(record.refused_invoices, "refused invoice"),
    ]
    if record.first_token_ms is not None:
        parts.append(f"first token after {record.first_token_ms:.0f} ms on average")
    if record.msat_per_1k_tokens is not None:
        parts.append(f"{sats(round(record.msat_per_1k_tokens))} per 1,000 tokens")
    return ", ".join(parts)


def _count(number: int, thing: str) -> str:
    return f"{number:,} {thing}{'' if number == 1 else 's'}"
