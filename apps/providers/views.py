"""The owner's Providers page: add a provider, see its models, prices and record, test it again
or remove it. Every change goes through apps/providers/services.py, which audits it."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.identity.access import owner_required
from apps.identity.models import Member
from apps.providers import services, shown
from apps.providers.models import Provider
from apps.providers.services import ProviderError


@never_cache
@owner_required
def providers_page(request: HttpRequest) -> HttpResponse:
    context = {"providers": shown.providers_shown(), "kinds": Provider.Kind.choices}
    return render(request, "providers/page.html", context)


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
