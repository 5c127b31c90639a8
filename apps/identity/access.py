"""Who may see what: the setup gate, role checks for pages, and API authentication."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from apps.identity import services
from apps.identity.models import Member, Role
from apps.identity.nip98 import AuthRefused
from apps.sharing.models import Share

View = TypeVar("View", bound=Callable[..., HttpResponse])

# What an unclaimed node still serves: the claim itself, health checks, static files.
OPEN_BEFORE_CLAIM = (
    "/setup/",
    "/auth/",
    "/healthz",
    "/favicon.ico",
    "/theme/",
    f"/{settings.STATIC_URL}",
)


class SetupRequiredMiddleware:
    """Until an owner exists, every page leads to setup."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(OPEN_BEFORE_CLAIM) and not services.is_claimed():
            return redirect("identity:setup")
        return self.get_response(request)


def client_address(request: HttpRequest) -> str:
    """The address a request came from, for per-address limits.

    Behind a trusted proxy, the rightmost X-Forwarded-For entry that is not itself a trusted
    proxy: each proxy appends the address it saw, and anything left of that is written by
    the client. "*" trusts whoever connects, never an address written in the header.
    """
    peer = str(request.META.get("REMOTE_ADDR") or "unknown")
    trusted = settings.TRUSTED_PROXIES
    if "*" not in trusted and not _is_proxy(peer, trusted):
        return peer
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_proxy(hop, trusted):
            return hop[:64]  # a key for the limits, of bounded length
    return peer


def _is_proxy(address: str, trusted: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for proxy in trusted:
        if proxy == "*":
            continue
        try:
            if ip in ipaddress.ip_network(proxy, strict=False):
                return True
        except ValueError:
            continue
    return False


def role_required(*roles: str) -> Callable[[View], View]:
    """A dashboard page for logged-in people in one of these roles; others get 403."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if request.user.role not in roles:
                raise PermissionDenied("Your role on this node does not include this page.")
            return view(request, *args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


owner_required = role_required(Role.OWNER)
household_required = role_required(Role.OWNER, Role.MEMBER)
anyone_required = role_required(Role.OWNER, Role.MEMBER, Role.FRIEND)


def api_member(request: HttpRequest) -> Member:
    """The member a program authenticates as (API key or NIP-98 signed request)."""
    path = request.get_full_path()
    return services.request_authenticate(
        request.headers.get("Authorization", ""),
        urls=services.login_urls(path),
        method=request.method or "GET",
        body=request.body,
    )


class NothingShared(AuthRefused):
    """A friend asked for a model, and the owner shares none with them."""

    status = 403
    code = "model_not_shared"


def models_user(member: Member) -> Member:
    """The member, if they may use the node's models: the household, and friends with whom
    the owner shares some (which ones, and how much, the pipeline checks on each request)."""
    if may_chat(member):
        return member
    raise NothingShared(
        "The owner has not shared any model with you on this node yet: "
        "friends can make API keys, and use models once the owner shares them."
    )


def may_chat(member: Any) -> bool:
    """Whether this person may use the dashboard's chat: the household, and friends with whom
    the owner shares some model (their conversations are theirs alone, as anyone's)."""
    if not member.is_authenticated:
        return False
    if member.role in (Role.OWNER, Role.MEMBER):
        return True
    return member.role == Role.FRIEND and Share.objects.filter(member=member).exists()


def chat_required(view: View) -> View:
    """A chat page: the household, and friends something is shared with; others get 403."""

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not may_chat(request.user):
            raise PermissionDenied("Nothing is shared with you on this node yet.")
        return view(request, *args, **kwargs)

    return guarded  # type: ignore[return-value]


def api_models_user(request: HttpRequest) -> Member:
    """The member a program asking for a model authenticates as; a friend with nothing shared
    is refused."""
    return models_user(api_member(request))


def api_authenticated(view: View) -> View:
    """An API endpoint: 401 (or 403) in OpenAI's error shape unless the caller authenticates."""

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            request.api_member = api_member(request)  # type: ignore[attr-defined]
        except AuthRefused as refusal:
            error = {"message": str(refusal), "type": "invalid_request_error", "param": None,
                     "code": refusal.code}  # fmt: skip
            return JsonResponse({"error": error}, status=refusal.status)
        return view(request, *args, **kwargs)

    return guarded  # type: ignore[return-value]
