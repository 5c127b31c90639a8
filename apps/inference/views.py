from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.identity.access import owner_required
from apps.inference import services
from apps.inference.models import LocalModel
from apps.inference.services import CatalogError


@owner_required
def catalog(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            _catalog_change(request)
        except CatalogError as error:
            messages.error(request, str(error))
            if request.POST.get("action") == "add_url":  # keep what was typed, to correct it
                return _catalog_page(request, {"url_form": request.POST}, status=400)
        return redirect("inference:catalog")
    return _catalog_page(request)


def _catalog_change(request: HttpRequest) -> None:
    action, form = request.POST.get("action"), request.POST
    if action == "add_path":
        model = services.model_add_path(
            Path(form.get("path", "").strip()), name=form.get("name", "")
        )
        messages.success(request, f"Added {model.name}.")
    elif action == "add_url":
        download = services.download_start(
            form.get("url", ""),
            name=form.get("name", ""),
            expected_sha256=form.get("sha256", ""),
            requested_by=request.user,  # type: ignore[arg-type]
        )
        messages.success(request, f"Downloading {download.name}.")
    elif action == "remove":
        services.model_remove(form.get("name", ""))
        messages.success(request, f"Removed {form.get('name', '')}.")
    elif action == "download_retry":
        services.download_retry(_download_id(request))
        messages.success(request, "Trying the download again, from where it stopped.")
    elif action == "download_cancel":
        services.download_cancel(_download_id(request))
        messages.success(request, "Download cancelled.")


def _download_id(request: HttpRequest) -> int:
    try:
        return int(request.POST.get("download", ""))
    except ValueError:
        raise CatalogError("No such download.") from None


def _catalog_page(
    request: HttpRequest, context: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    context = {
        "models": LocalModel.objects.order_by("name"),
        "downloads": services.downloads_recent(),
        **(context or {}),
    }
    return render(request, "inference/catalog.html", context, status=status)
