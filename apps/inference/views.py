from __future__ import annotations

from pathlib import Path

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
            if request.POST.get("action") == "add_path":
                model = services.model_add_path(
                    Path(request.POST.get("path", "").strip()), name=request.POST.get("name", "")
                )
                messages.success(request, f"Added {model.name}.")
            elif request.POST.get("action") == "remove":
                services.model_remove(request.POST.get("name", ""))
        except CatalogError as error:
            messages.error(request, str(error))
        return redirect("inference:catalog")
    return render(
        request, "inference/catalog.html", {"models": LocalModel.objects.order_by("name")}
    )
