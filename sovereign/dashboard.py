"""The dashboard's shell: its theme, its icon, and the pages shown when something goes wrong."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseServerError, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

logger = logging.getLogger(__name__)

THEME_COOKIE = "theme"
THEMES = ("light", "dark")  # no cookie: follow the system's setting
THEME_COOKIE_SECONDS = 365 * 24 * 3600
# Answers for programs, never pages: they keep the JSON (or empty) answers they document.
PROGRAM_PATHS = ("/v1/", "/api/", "/auth/", "/healthz", "/ws/")


@dataclass(frozen=True)
class ErrorPage:
    code: str  # for programs, in the JSON answer
    title: str
    explanation: str  # in plain words, for people


ERRORS = {
    403: ErrorPage(
        "forbidden",
        "Not for your role",
        "This page is not part of what your role on this node includes. "
        "The owner decides who is a member and who is a friend.",
    ),
    404: ErrorPage(
        "not_found",
        "Page not found",
        "There is no page at this address. It may have moved, or the link may be mistyped.",
    ),
    405: ErrorPage(
        "method_not_allowed",
        "Not a page to open",
        "This address takes a form's answer, not a visit: go back to the page the form is on.",
    ),
    500: ErrorPage(
        "server_error",
        "Something went wrong",
        "The node failed to answer this page. Nothing you did caused it; the node's log says "
        "what happened. Try again in a moment.",
    ),
}


def theme(request: HttpRequest) -> dict[str, str]:
    """The theme chosen in this browser, so the page is served in it (no flash on load)."""
    chosen = request.COOKIES.get(THEME_COOKIE, "")
    return {"theme": chosen if chosen in THEMES else ""}


@require_POST
def theme_set(request: HttpRequest) -> HttpResponse:
    """The theme toggle without JavaScript: keep the choice in a cookie, and go back."""
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = "/"
    response = redirect(back)
    chosen = request.POST.get(THEME_COOKIE, "")
    if chosen in THEMES:
        response.set_cookie(
            THEME_COOKIE, chosen, max_age=THEME_COOKIE_SECONDS, samesite="Lax", path="/"
        )
    else:
        response.delete_cookie(THEME_COOKIE, path="/", samesite="Lax")
    return response


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico whatever the page says; send them to the real icon."""
    return redirect(static("img/icon-32.png"))


def is_program_request(request: HttpRequest) -> bool:
    return request.path.startswith(PROGRAM_PATHS)


def error_page(request: HttpRequest, status: int) -> HttpResponse:
    error = ERRORS[status]
    if is_program_request(request):
        return JsonResponse(
            {"error": {"message": error.explanation, "code": error.code}}, status=status
        )
    return render(request, "errors/error.html", {"status": status, **asdict(error)}, status=status)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_page(request, 403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_page(request, 404)


def server_error(request: HttpRequest, *args: Any) -> HttpResponse:
    try:
        return error_page(request, 500)
    except Exception:  # what broke the page (the database, a template) may break this one
        logger.exception("The error page itself failed; answering with the plain one")
        return HttpResponseServerError(render_to_string("500.html"))
