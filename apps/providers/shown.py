"""How a provider and a route are shown to people, the same on the Providers page and in
`manage.py providers list` / `providers route list`: models with the price of one request, a
provider's record and what the node keeps bought from it, a route's models in order and the
most it costs. Nothing here reads or shows a secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from apps.inference.models import LocalModel
from apps.providers import routing, services
from apps.providers.models import Provider, ProviderModel, Route
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
    trusted: bool  # nothing redacted from what is sent to it
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
        trusted=provider.trusted,
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


@dataclass(frozen=True)
class RouteShown:
    name: str  # route/<name>, as members ask for it
    short_name: str  # <name>, as the owner sets and removes it
    policy: str
    policy_line: str
    models: list[ModelShown]  # in the owner's order
    most: str  # what one request along it costs at most, for people


# One line each, the same on the page's form, its list of routes and the shell.
POLICY_LINES: dict[str, str] = {
    Route.Policy.FALLBACK: "Tries the models in this order: when one fails or times out, the "
    "next answers.",
    Route.Policy.SPREAD: "Gives each new conversation to the model the member has used least, "
    "so no one provider sees them all.",
}
LOCAL_PRICE = "free (on this node)"
GONE_PRICE = "no longer listed: skipped"


def routes_shown() -> list[RouteShown]:
    offered = {model.name: model for model in models_offered()}
    return [route_shown(route, offered) for route in routing.routes_list()]


def route_shown(route: Route, offered: dict[str, ModelShown] | None = None) -> RouteShown:
    """`offered`: models_offered() by name; a model no longer there is shown as skipped."""
    if offered is None:
        offered = {model.name: model for model in models_offered()}
    models = [offered.get(name, ModelShown(name, GONE_PRICE, None)) for name in route.model_names]
    most = routing.route_price_msat(
        routing.usable_models(route, outside=True), settings.ENGINE_DEFAULT_MAX_TOKENS
    )
    return RouteShown(
        name=f"{routing.PREFIX}/{route.name}",
        short_name=route.name,
        policy=route.policy,
        policy_line=POLICY_LINES.get(route.policy, ""),
        models=models,
        most=f"at most {sats(most)} a request" if most else "free",
    )


def models_offered() -> list[ModelShown]:
    """Every model a route may name: the node's own, then the outside ones with their price."""
    local = [
        ModelShown(model.name, LOCAL_PRICE, model.context_length)
        for model in LocalModel.objects.order_by("name")
    ]
    return local + [model_shown(model) for model in services.outside_models()]


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
