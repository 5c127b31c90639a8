from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.identity import services as identity
from apps.identity.access import household_required
from apps.inference import services as inference
from apps.system import services


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    # 200 whenever the web server answers, so a container health check tests the web
    # server itself; the body says which other components are up.
    return JsonResponse(services.status_snapshot())


@require_GET
@household_required
def system_page(request: HttpRequest) -> HttpResponse:
    models, slots = inference.engine_overview()
    context = {
        "status": services.status_snapshot(),
        "node_npub": identity.node_npub(),
        "models": models,
        "slots": slots,
    }
    return render(request, "system/page.html", context)


@require_POST
@household_required
def probe_send(request: HttpRequest) -> JsonResponse:
    probe = services.probe_send()
    return JsonResponse({"probe_id": str(probe.id)}, status=202)
