"""Outside providers: adding, listing, testing and removing them, their catalogs and prices, and
the routes the answer pipeline takes to their models (`<provider name>/<model id>`)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Avg, Count, Q, Sum
from django.utils import timezone

from apps.audit.services import audit_record
from apps.providers import sealing
from apps.providers.backends import l402, prepaid
from apps.providers.backends.base import ProviderInfo
from apps.providers.fetching import FetchFailed, json_fetched
from apps.providers.models import (
    NAME_PATTERN,
    Credential,
    OutsideRequest,
    Price,
    Provider,
    ProviderModel,
)

CATALOG_BYTES = 1 << 20


class ProviderError(Exception):
    """Bad input for a provider, or one that cannot be reached; nothing was changed."""


@dataclass(frozen=True)
class OutsideRoute:
    """An outside model as the pipeline reaches it."""

    name: str  # <provider>/<model id>
    provider: ProviderInfo
    model_id: str
    price: Price

    def price_msat(self, max_tokens: int, prompt_tokens: int = 0) -> int:
        return self.price.most(max_tokens, prompt_tokens)


def provider_info(provider: Provider) -> ProviderInfo:
    return ProviderInfo(
        id=provider.pk,
        name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url,
        timeout_seconds=provider.timeout_seconds,
        max_price_msat=provider.max_price_msat,
        topup_msat=provider.topup_msat,
        api_key=sealing.unseal(provider.secret_sealed),
        trusted=provider.trusted,
    )


def base_url_checked(url: str) -> str:
    """The provider's root as chat requests are built on it: http(s), no query, no `/v1`."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError(
            "The provider's URL must start with http:// or https:// and name a host."
        )
    if parts.query or parts.fragment or parts.username:
        raise ProviderError("The provider's URL takes no query, fragment or password.")
    path = re.sub(r"/v1/?$", "", parts.path.rstrip("/"))
    return f"{parts.scheme}://{parts.netloc}{path}"


def _private_or_https(base_url: str) -> None:
    """A provider that is paid carries live tokens and keys: over HTTPS, or to an address that
    does not cross the internet (this box, the home network, an onion service)."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme == "https" or host.endswith(".onion") or host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not (address.is_private or address.is_loopback):
        raise ProviderError(
            "A paid provider must be reached over https:// (its tokens and keys are "
            "credentials), unless it is on this box, the home network or an onion address."
        )


def provider_add(url: str, *, kind: str, name: str, api_key: str = "", actor: str = "") -> Provider:
    """Add a provider and fetch its models; a provider whose catalog cannot be read is not
    added (the error says why)."""
    if kind not in Provider.Kind.values:
        raise ProviderError(f"Unknown kind '{kind}': use one of {', '.join(Provider.Kind.values)}.")
    if not re.match(NAME_PATTERN, name or ""):
        raise ProviderError(
            "The name must be 1 to 40 lower-case letters, digits or dashes, such as 'routstr'."
        )
    if name == "route":  # routes are asked for as route/<name> (routing.py)
        raise ProviderError("The name 'route' is kept for routes: give the provider another.")
    if Provider.objects.filter(name=name).exists():
        raise ProviderError(f"There is already a provider named '{name}'.")
    base_url = base_url_checked(url)
    if kind != Provider.Kind.OPENAI:
        _private_or_https(base_url)
    provider = Provider(
        name=name,
        kind=kind,
        base_url=base_url,
        secret_sealed=sealing.seal(api_key.strip()),
        timeout_seconds=float(settings.PROVIDER_TIMEOUT_SECONDS),
        max_price_msat=settings.PROVIDER_MAX_PRICE_SAT * 1000,
        topup_msat=settings.PROVIDER_TOPUP_SAT * 1000,
    )
    catalog = catalog_read(provider)
    with transaction.atomic():
        provider.catalog_fetched_at = timezone.now()
        provider.save()
        _catalog_save(provider, catalog)
        _audit("provider_added", actor, name, f"{kind} {provider.base_url}")
    return provider


def provider_remove(name: str, actor: str = "") -> None:
    """Remove a provider with what was bought from it; not while a payment for it may still
    be completing (its credential would be lost with it)."""
    with transaction.atomic():
        provider = provider_get(name)
        if provider.credentials.filter(state=Credential.State.PENDING).exists():
            raise ProviderError(
                f"A payment to {name} is still being settled; remove it once the wallet has "
                "settled it (the Wallet page shows it as pending)."
            )
        provider.delete()
        _audit("provider_removed", actor, name, "")


def provider_trust(name: str, trusted: bool, *, actor: str = "") -> bool:
    """Mark a provider trusted (what is sent to it is not redacted; hard stops still refuse)
    or not; whether that changed anything."""
    with transaction.atomic():
        provider = provider_get(name)
        changed = Provider.objects.filter(pk=provider.pk, trusted=not trusted).update(
            trusted=trusted
        )
        if changed:
            detail = "trusted: nothing redacted" if trusted else "not trusted: redacted"
            _audit("provider_trusted", actor, name, detail)
    return bool(changed)


def provider_get(name: str) -> Provider:
    provider = Provider.objects.filter(name=name).first()
    if provider is None:
        raise ProviderError(f"There is no provider named '{name}'.")
    return provider


def providers_list() -> list[Provider]:
    return list(Provider.objects.prefetch_related("models"))


def provider_test(name: str) -> list[ProviderModel]:
    """Read the provider's catalog again; its models and prices replace the ones kept."""
    provider = provider_get(name)
    try:
        catalog = catalog_read(provider)
    except ProviderError as error:
        Provider.objects.filter(pk=provider.pk).update(catalog_error=str(error))
        raise
    with transaction.atomic():
        Provider.objects.filter(pk=provider.pk).update(
            catalog_error="", catalog_fetched_at=timezone.now()
        )
        _catalog_save(provider, catalog)
    return list(provider.models.all())


# Catalogs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    model_id: str
    request_msat: int | None = None
    prompt_msat_per_1k: int | None = None
    completion_msat_per_1k: int | None = None
    context_length: int | None = None


def catalog_read(provider: Provider) -> list[Offer]:
    """The provider's models and published prices, from `GET /v1/models` (and what its kind
    publishes besides)."""
    data = _get_json(provider, "/v1/models")
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ProviderError("The provider's model list is not an OpenAI-style list.")
    read = (_offer(entry) for entry in entries if isinstance(entry, dict))
    offers = [offer for offer in read if offer is not None]
    if not offers:
        raise ProviderError("The provider lists no models.")
    if provider.kind in (Provider.Kind.L402, Provider.Kind.MPP):
        return _manifest_priced(provider, offers)
    if provider.kind == Provider.Kind.PREPAID:
        return _prepaid_priced(offers, data)
    return offers


def _manifest_priced(provider: Provider, offers: list[Offer]) -> list[Offer]:
    """L402 and MPP servers publish their prices in the agent-spec manifest
    (`/.well-known/l402.json`); where it prices a model, that price is the one shown."""
    prices = l402.manifest_prices(provider.base_url, timeout=min(provider.timeout_seconds, 15))
    if not prices:
        return offers
    return [
        replace(
            offer,
            request_msat=prices.get(
                offer.model_id, prices.get(l402.EVERY_MODEL, offer.request_msat)
            ),
        )
        for offer in offers
    ]


def _prepaid_priced(offers: list[Offer], data: Any) -> list[Offer]:
    """Routstr publishes its prices in sats (`sats_pricing`); the prepaid kind reads them."""
    prices = prepaid.catalog_prices(data)
    return [_priced(offer, prices.get(offer.model_id, {})) for offer in offers]


def _priced(offer: Offer, prices: dict[str, int]) -> Offer:
    return replace(
        offer,
        prompt_msat_per_1k=prices.get("prompt_msat_per_1k", offer.prompt_msat_per_1k),
        completion_msat_per_1k=prices.get("completion_msat_per_1k", offer.completion_msat_per_1k),
        context_length=prices.get("context_length", offer.context_length),
    )


def _get_json(provider: Provider, path: str) -> Any:
    headers = {}
    key = sealing.unseal(provider.secret_sealed)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        return json_fetched(
            f"{provider.base_url}{path}",
            headers=headers,
            timeout=min(provider.timeout_seconds, 15),
            limit=CATALOG_BYTES,
        )
    except FetchFailed as failed:
        raise ProviderError(_fetch_failure(provider, path, failed)) from None


def _fetch_failure(provider: Provider, path: str, failed: FetchFailed) -> str:
    if failed.status in (401, 403):
        return (
            f"The provider answered {failed.status} to {path}: it wants an API key, "
            "or refuses the one given."
        )
    if failed.status is not None:
        return f"The provider answered {failed.status} to {path}."
    if failed.unreachable:
        return f"The provider cannot be reached at {provider.base_url} ({failed})."
    return f"The provider's answer to {path} {failed}."


def _offer(entry: dict[str, Any]) -> Offer | None:
    model_id = entry.get("id")
    if not isinstance(model_id, str) or not 0 < len(model_id) <= 200:
        return None
    context = entry.get("context_length")
    return Offer(
        model_id=model_id,
        request_msat=_msat(entry.get("sovereign_price", {}), "request_msat"),
        context_length=context if isinstance(context, int) and context > 0 else None,
    )


def _msat(prices: Any, key: str) -> int | None:
    value = prices.get(key) if isinstance(prices, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return int(value)


def _catalog_save(provider: Provider, offers: list[Offer]) -> None:
    provider.models.exclude(model_id__in=[offer.model_id for offer in offers]).delete()
    for offer in offers:
        ProviderModel.objects.update_or_create(
            provider=provider,
            model_id=offer.model_id,
            defaults={
                "request_msat": offer.request_msat,
                "prompt_msat_per_1k": offer.prompt_msat_per_1k,
                "completion_msat_per_1k": offer.completion_msat_per_1k,
                "context_length": offer.context_length,
            },
        )


# Routes ------------------------------------------------------------------------------------


# Every request reads its route: one fixed query, not one the ORM compiles each time (a
# millisecond of the few Sovereign may add to a request; see docs/benchmarks.md).
_ROUTE_SQL = (
    "SELECT p.id, p.name, p.kind, p.base_url, p.timeout_seconds, p.max_price_msat, "
    "p.topup_msat, p.secret_sealed, m.request_msat, m.prompt_msat_per_1k, "
    "m.completion_msat_per_1k, p.trusted FROM providers_providermodel m "
    "JOIN providers_provider p ON p.id = m.provider_id WHERE p.name = %s AND m.model_id = %s"
)


def route_for(name: str) -> OutsideRoute | None:
    """The outside model named `<provider>/<model id>`, or None."""
    provider_name, slash, model_id = name.partition("/")
    if not slash:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_ROUTE_SQL, [provider_name, model_id])
        row = cursor.fetchone()
    if row is None:
        return None
    provider_id, _, kind, base_url, timeout, max_price, topup, sealed = row[:8]
    provider = ProviderInfo(
        provider_id,
        provider_name,
        kind,
        base_url,
        timeout,
        max_price,
        topup,
        sealing.unseal(sealed),
        trusted=bool(row[11]),
    )
    price = Price(kind != Provider.Kind.OPENAI, max_price, row[8], row[9], row[10])
    return OutsideRoute(name, provider, model_id, price)


def outside_models() -> list[ProviderModel]:
    return list(ProviderModel.objects.select_related("provider"))


# Records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reputation:
    requests: int
    failures: int
    timeouts: int
    refused_invoices: int
    first_token_ms: float | None
    msat_per_1k_tokens: float | None


def reputation(provider: Provider) -> Reputation:
    """What the node's own requests to this provider say of it."""
    Outcome = OutsideRequest.Outcome
    totals = provider.requests.aggregate(
        requests=Count("id"),
        failures=Count("id", filter=Q(outcome=Outcome.FAILED)),
        timeouts=Count("id", filter=Q(outcome=Outcome.TIMEOUT)),
        refused=Count("id", filter=Q(outcome=Outcome.INVOICE_REFUSED)),
        first_token=Avg("first_token_ms", filter=Q(outcome=Outcome.ANSWERED)),
        cost=Sum("cost_msat"),
        tokens=Sum("completion_tokens"),
    )
    tokens = (totals["tokens"] or 0) + 0
    per_1k = (totals["cost"] or 0) * 1000 / tokens if tokens else None
    return Reputation(
        requests=totals["requests"],
        failures=totals["failures"],
        timeouts=totals["timeouts"],
        refused_invoices=totals["refused"],
        first_token_ms=totals["first_token"],
        msat_per_1k_tokens=per_1k,
    )


def credentials_live(provider_id: int) -> list[Credential]:
    return list(Credential.objects.filter(provider_id=provider_id, state=Credential.State.LIVE))


def _audit(action: str, actor: str, subject: str, detail: str) -> None:
    audit_record(action, actor=actor, subject=subject, detail=detail)
