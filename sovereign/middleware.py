"""Headers every answer carries."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from sovereign import dashboard

# Nothing on any page may run but the node's own scripts, nor load anything from elsewhere:
# member names and pictures, model answers and profile text are all other people's words.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    """The policy on every answer; a view may set a stricter one of its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


class NotAllowedPageMiddleware:
    """A browser opening an address that only takes forms gets a page, not Django's blank 405.

    Django has no handler405; programs keep the plain answer (they read the status code).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 405 or response.streaming or response.content:
            return response
        if dashboard.is_program_request(request) or "text/html" not in request.headers.get(
            "Accept", ""
        ):
            return response
        page = dashboard.error_page(request, 405)
        if response.has_header("Allow"):
            page["Allow"] = response["Allow"]
        return page
