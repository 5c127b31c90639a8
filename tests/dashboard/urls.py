"""The node's URLs plus one page that fails, to see the 500 page as people would."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from sovereign.urls import handler403, handler404, handler500, urlpatterns

__all__ = ["handler403", "handler404", "handler500", "urlpatterns"]


def broken_page(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a page that fails")


urlpatterns = [path("broken/", broken_page), *urlpatterns]
