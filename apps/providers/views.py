"""The owner's Providers page: add a provider, see its models, prices and record, test it again
or remove it; set and remove the routes across models. Every change goes through
apps/providers/services.py or routing.py, which audit it."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.identity.access import owner_required
from apps.identity.models import Member
from apps.providers import routing, services, shown
from apps.providers.models import Provider, Route
from apps.providers.services import ProviderError

ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th")


@never_cache
@owner_required
def providers_page(request: HttpRequest) -> HttpResponse:
    routes = shown.routes_shown()
    # `?route=<name>` fills the form with that route, to change it without picking all again.
    editing = next((r for r in routes if r.short_name == request.GET.get("route")), None)
    picked = [model.name for model in editing.models] if editing else []
    context = {
        "providers": shown.providers_shown(),
        "kinds": Provider.Kind.choices,
        "routes": routes,
        "editing": editing,
        "policies": [(value, shown.POLICY_LINES[value]) for value in Route.Policy.values],
        "offered": shown.models_offered(),
        "rows": _model_rows(picked),
    }
    return render(request, "providers/page.html", context)


def _model_rows(picked: list[str]) -> list[tuple[str, str]]:
    """The form's rows of models, one a place up to the most a route names: each row's label
    and the model picked in it, if any."""
    places = ORDINALS[: routing.MOST_MODELS]
    return [(place, picked[i] if i < len(picked) else "") for i, place in enumerate(places)]


@owner_required
@require_POST
def provider_add(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    form = request.POST
    try:
        provider = services.provider_add(
            form.get("url", ""),
            kind=form.get("kind", ""),
            name=form.get("name", "").strip(),
            api_key=form.get("api_key", ""),
            actor=owner.pubkey,
        )
    except ProviderError as error:
        messages.error(request, f"Not added: {error}")
        return redirect("providers:page")
    count = provider.models.count()
    messages.success(
        request, f"Added {provider.name}: {count} model{'s' if count != 1 else ''} listed."
    )
    return redirect("providers:page")


@owner_required
@require_POST
def provider_test(request: HttpRequest, name: str) -> HttpResponse:
    try:
        models = services.provider_test(name)
    except ProviderError as error:
        messages.error(request, f"{name} did not answer as expected: {error}")
        return redirect("providers:page")
    count = len(models)
    messages.success(
        request, f"{name} answered: {count} model{'s' if count != 1 else ''}, prices read again."
    )
    return redirect("providers:page")


@owner_required
@require_POST
def provider_remove(request: HttpRequest, name: str) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    try:
        services.provider_remove(name, actor=owner.pubkey)
    except ProviderError as error:
        messages.error(request, str(error))
        return redirect("providers:page")
    messages.success(request, f"Removed {name}: its models are no longer offered.")
    return redirect("providers:page")


@owner_required
@require_POST
def provider_trust(request: HttpRequest, name: str) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    trusted = request.POST.get("trusted") == "yes"
    try:
        services.provider_trust(name, trusted, actor=owner.pubkey)
    except ProviderError as error:
        messages.error(request, str(error))
        return redirect("providers:page")
    if trusted:
        messages.success(request, f"{name} is trusted: what is sent to it is not redacted.")
    else:
        messages.success(request, f"{name} is not trusted: private values are redacted again.")
    return redirect("providers:page")


@owner_required
@require_POST
def route_set(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    form = request.POST
    name = form.get("name", "").strip()
    models = [model.strip() for model in form.getlist("models") if model.strip()]
    try:
        routing.route_set(name, form.get("policy", ""), models, actor=owner.pubkey)
    except ProviderError as error:
        messages.error(request, f"Route not set: {error}")
        return redirect("providers:page")
    messages.success(
        request,
        f"Set {routing.PREFIX}/{name}: {len(models)} model{'s' if len(models) != 1 else ''}.",
    )
    return redirect("providers:page")


@owner_required
@require_POST
def route_remove(request: HttpRequest, name: str) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    try:
        routing.route_remove(name, actor=owner.pubkey)
    except ProviderError as error:
        messages.error(request, str(error))
        return redirect("providers:page")
    messages.success(request, f"Removed {routing.PREFIX}/{name}: members can no longer ask for it.")
    return redirect("providers:page")
