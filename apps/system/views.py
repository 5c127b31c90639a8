from __future__ import annotations

import ipaddress

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.identity import services as identity
from apps.identity.access import household_required
from apps.identity.models import Role
from apps.inference import services as inference
from apps.system import services


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    # 200 whenever the web server answers, so a container health check tests the web
    # server itself; the body says which other components are up. Open to anyone (the
    # stores' proxies let everyone through to Sovereign's own login), so the details (the
    # Lightning node's id and balance, worker host names) only for a health check on this
    # box or a household member.
    snapshot = services.status_snapshot()
    if not (_from_this_box(request) or _household(request)):
        snapshot["components"] = [
            {key: part[key] for key in ("name", "label", "state")}
            for part in snapshot["components"]
        ]
    return JsonResponse(snapshot)


def _household(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_authenticated and user.role in (Role.OWNER, Role.MEMBER))


def _from_this_box(request: HttpRequest) -> bool:
    """Straight from loopback: a proxy on this box (X-Forwarded-For) passes others' requests."""
    peer = str(request.META.get("REMOTE_ADDR") or "")
    try:
        loopback = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
    return loopback and "HTTP_X_FORWARDED_FOR" not in request.META


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
