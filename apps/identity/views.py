from __future__ import annotations

import time

import segno
from django.contrib import messages
from django.contrib.auth import login, logout
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.audit.services import audit_record, audit_rows
from apps.identity import checklist, logins, pictures, services
from apps.identity.access import (
    anyone_required,
    api_authenticated,
    client_address,
    owner_required,
    role_required,
)
from apps.identity.models import ApiKey, AuditAction, Member, Role
from apps.identity.nip98 import AuthRefused, event_from_authorization
from apps.identity.services import IdentityError
from apps.sharing import services as sharing

SETUP_OK = "identity.setup_ok_until"
SETUP_OK_SECONDS = 15 * 60
INVITE = "identity.invite"
REMOTE_SESSION = "identity.remote_signer"


def _client(request: HttpRequest) -> str:
    return client_address(request)


def home(request: HttpRequest) -> HttpResponse:
    """Where each person starts: the household in the chat (the owner at the first-run
    checklist until it is done or put away), friends at what is shared with them."""
    if not request.user.is_authenticated:
        return redirect("identity:login")
    if request.user.role == Role.FRIEND:
        return redirect("identity:shared")
    if request.user.is_owner and checklist.checklist_pending(request.user):
        return redirect("identity:start")
    return redirect("chat:new")


@owner_required
@require_http_methods(["GET", "POST"])
def start(request: HttpRequest) -> HttpResponse:
    """The owner's first-run checklist; Dismiss sends the owner to the chat from then on."""
    owner: Member = request.user  # type: ignore[assignment]
    if request.method == "POST":
        checklist.checklist_dismiss(owner)
        messages.success(request, "Checklist put away: it stays in your menu under Get started.")
        return redirect("home")
    items = checklist.checklist_items()
    context = {
        "items": items,
        "complete": checklist.checklist_complete(items),
        "dismissed": owner.checklist_dismissed_at is not None,
    }
    return render(request, "identity/start.html", context)


@role_required(Role.FRIEND)
@require_GET
def shared(request: HttpRequest) -> HttpResponse:
    """A friend's page: what the owner shares with them, and what they can do meanwhile."""
    shown = sharing.friend_shown(request.user)  # type: ignore[arg-type]
    context = {"owner": services.node_owner(), "share": shown, "resets_at": sharing.reset_at()}
    return render(request, "identity/shared.html", context)


@never_cache
def setup(request: HttpRequest) -> HttpResponse:
    if services.is_claimed():
        return redirect("identity:login")
    if request.method == "POST":
        allowed = services.attempt_allowed(
            f"setup:{_client(request)}", services.LOGIN_ATTEMPTS_PER_WINDOW, services.ATTEMPT_WINDOW
        )
        if allowed and services.setup_secret_matches(request.POST.get("secret", "")):
            # A new session key: a session id planted before the secret was typed is useless.
            request.session.cycle_key()
            request.session[SETUP_OK] = int(time.time()) + SETUP_OK_SECONDS
        else:
            messages.error(request, "That is not the setup secret (or too many tries: wait).")
    return render(request, "identity/setup.html", {"secret_ok": _setup_ok(request)})


def _setup_ok(request: HttpRequest) -> bool:
    return int(request.session.get(SETUP_OK, 0)) > time.time()


@never_cache
@require_GET
def login_page(request: HttpRequest) -> HttpResponse:
    if request.GET.get("invite"):
        request.session[INVITE] = request.GET["invite"]
    return render(request, "identity/login.html", {"invited": bool(request.session.get(INVITE))})


@never_cache
@require_POST
def challenge(request: HttpRequest) -> JsonResponse:
    if not services.attempt_allowed(f"challenge:{_client(request)}", 60, services.ATTEMPT_WINDOW):
        return JsonResponse({"error": "Too many requests; wait a few minutes."}, status=429)
    # The server's clock, so a browser whose clock is off still signs inside the window.
    return JsonResponse(
        {
            "challenge": logins.challenge_issue(),
            "path": reverse("identity:verify"),
            "now": int(time.time()),
        }
    )


@never_cache
@require_POST
def verify(request: HttpRequest) -> JsonResponse:
    """Log in with a signed kind-27235 event in `Authorization: Nostr <base64>`."""
    context, how = _login_context(request), "browser extension"
    try:
        event_json = event_from_authorization(request.headers.get("Authorization", ""))
    except AuthRefused as refusal:
        return JsonResponse({"error": str(logins.login_refuse(refusal, context, how))}, status=401)
    try:
        urls = services.login_urls(request.path)
        member = logins.login_verify(event_json, urls=urls, context=context, how=how)
    except AuthRefused as refusal:
        return JsonResponse({"error": str(refusal)}, status=401)
    return _logged_in(request, member)


def _login_context(request: HttpRequest) -> logins.LoginContext:
    return logins.LoginContext(
        client=_client(request),
        may_claim=_setup_ok(request),
        invite_token=request.session.get(INVITE, ""),
    )


def _logged_in(request: HttpRequest, member: Member) -> JsonResponse:
    login(request, member, backend="django.contrib.auth.backends.ModelBackend")
    request.session.pop(INVITE, None)
    return JsonResponse({"npub": member.npub, "role": member.role})


@require_http_methods(["GET", "POST"])
def logout_view(request: HttpRequest) -> HttpResponse:
    """GET asks first: a GET that logged out would let any page do it with an <img>."""
    if request.method == "GET":
        if not request.user.is_authenticated:
            return redirect("identity:login")
        return render(request, "identity/logout.html")
    if request.user.is_authenticated:
        audit_record(AuditAction.LOGOUT, actor=request.user.pubkey)
    logout(request)
    return redirect("identity:login")


@never_cache  # an invite link shown here works for whoever holds it
@owner_required
def people(request: HttpRequest) -> HttpResponse:
    owner: Member = request.user  # type: ignore[assignment]
    invite_link = ""
    if request.method == "POST":
        invite_link = _people_change(request, owner)
        if not invite_link:
            return redirect("identity:people")
    members = list(Member.objects.order_by("joined_at"))
    context = {
        "members": members,
        "pictured": {m.pubkey for m in members if pictures.picture_path(m.pubkey).exists()},
        "roles": [Role.MEMBER, Role.FRIEND],
        "audit": audit_rows(),
        "invites": services.invites_open(),
        "invite_link": invite_link,
    }
    return render(request, "identity/people.html", context)


def _people_change(request: HttpRequest, owner: Member) -> str:
    """Apply one change from the People page; returns an invite link when one was made."""
    action, role = request.POST.get("action"), request.POST.get("role", "")
    try:
        if action == "invite_link":
            _, token = services.invite_create(role, owner)
            messages.success(request, f"Invite link made for a {role}.")
            return request.build_absolute_uri(f"{reverse('identity:login')}?invite={token}")
        if action == "invite_cancel":
            services.invite_cancel(int(request.POST.get("invite_id", "0")), owner)
            messages.success(request, "Invite cancelled: its link no longer works.")
            return ""
        pubkey = services.parse_pubkey(request.POST.get("pubkey", ""))
        messages.success(request, _member_change(action, pubkey, role, owner))
    except (IdentityError, ValueError) as error:
        messages.error(request, str(error))
    return ""


def _member_change(action: str | None, pubkey: str, role: str, owner: Member) -> str:
    """Add, re-role or remove one person; returns what to tell the owner."""
    if action == "add":
        person = services.member_add(pubkey, role, actor=owner.pubkey)
        return f"Added {person.display_name} as a {role}."
    if action == "set_role":
        person = services.member_set_role(pubkey, role, actor=owner.pubkey)
        return f"{person.display_name} is now a {role}."
    if action == "remove":
        name = str(Member.objects.filter(pubkey=pubkey).first() or "That person")
        services.member_remove(pubkey, actor=owner.pubkey)
        return f"Removed {name} from the household."
    raise IdentityError("Unknown change.")


@owner_required
@require_GET
def picture(request: HttpRequest, pubkey: str) -> HttpResponse:
    """A member's profile picture, as the node fetched and checked it."""
    try:
        content = pictures.picture_path(services.parse_pubkey(pubkey)).read_bytes()
    except (IdentityError, OSError):
        raise Http404("No picture.") from None
    response = HttpResponse(content, content_type=pictures.picture_type(content))
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@never_cache  # a new key is shown once, and must not stay in any cache
@anyone_required
def api_keys(request: HttpRequest) -> HttpResponse:
    member: Member = request.user  # type: ignore[assignment]
    new_key = ""
    try:
        if request.POST.get("action") == "create":
            key, new_key = services.apikey_create(member, request.POST.get("name", ""))
            messages.success(request, f"Made the key “{key.name}”. Copy it now: it is shown once.")
        elif request.POST.get("action") == "revoke":
            services.apikey_revoke(member, int(request.POST.get("key_id", "0")))
            messages.success(request, "Key revoked: programs using it are refused from now on.")
            return redirect("identity:keys")
    except (IdentityError, ValueError) as error:
        messages.error(request, str(error))
    context = {
        "keys": ApiKey.objects.filter(member=member).order_by("-created_at"),
        "new_key": new_key,
        "base_url": request.build_absolute_uri("/v1"),
    }
    return render(request, "identity/keys.html", context)


@csrf_exempt  # programs authenticate each request with a key or a signature, not a cookie
@require_GET
@api_authenticated
def api_me(request: HttpRequest) -> JsonResponse:
    member: Member = request.api_member  # type: ignore[attr-defined]
    return JsonResponse({"npub": member.npub, "role": member.role, "name": member.display_name})


@never_cache
@require_POST
def code_send(request: HttpRequest) -> JsonResponse:
    try:
        logins.code_send(services.parse_pubkey(request.POST.get("npub", "")), _client(request))
    except IdentityError as error:
        return JsonResponse({"error": str(error)}, status=400)
    return JsonResponse(
        {"message": "If this key is a member here, a code is on its way by Nostr DM."}
    )


@never_cache
@require_POST
def code_verify(request: HttpRequest) -> JsonResponse:
    try:
        pubkey = services.parse_pubkey(request.POST.get("npub", ""))
        member = logins.code_verify(pubkey, request.POST.get("code", ""), _login_context(request))
    except (IdentityError, AuthRefused) as refusal:
        return JsonResponse({"error": str(refusal)}, status=401)
    return _logged_in(request, member)


@never_cache
@require_POST
def remote_start(request: HttpRequest) -> JsonResponse:
    if not services.attempt_allowed(f"remote:{_client(request)}", 10, services.ATTEMPT_WINDOW):
        return JsonResponse(
            {"error": "Too many QR codes asked for; wait a few minutes."}, status=429
        )
    previous = request.session.pop(REMOTE_SESSION, None)
    if previous:
        logins.remote_login_cancel(previous)  # one waiting signer per browser at most
    try:
        session = logins.remote_login_start()
    except IdentityError as error:
        return JsonResponse({"error": str(error)}, status=503)
    request.session[REMOTE_SESSION] = session.session_id
    qr = segno.make(session.uri, error="m").svg_inline(scale=4, dark="#1d1f21")
    return JsonResponse({"uri": session.uri, "qr_svg": qr})


@never_cache
@require_GET
def remote_status(request: HttpRequest) -> JsonResponse:
    session_id = request.session.get(REMOTE_SESSION)
    if not session_id:
        return JsonResponse({"error": "No remote-signer login was started here."}, status=400)
    try:
        member = logins.remote_login_finish(session_id, _login_context(request))
    except AuthRefused as refusal:
        request.session.pop(REMOTE_SESSION, None)
        return JsonResponse({"error": str(refusal)}, status=401)
    if member is None:
        return JsonResponse({"state": "pending"})
    request.session.pop(REMOTE_SESSION, None)
    return _logged_in(request, member)


@never_cache
@require_POST
def bunker(request: HttpRequest) -> JsonResponse:
    try:
        member = logins.bunker_login(request.POST.get("uri", ""), _login_context(request))
    except AuthRefused as refusal:
        return JsonResponse({"error": str(refusal)}, status=401)
    return _logged_in(request, member)
