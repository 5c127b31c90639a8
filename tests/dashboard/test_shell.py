"""The dashboard's shell: error pages people can find their way back from, the icon, the theme."""

from __future__ import annotations

from typing import Any

import pytest
from django.template import RequestContext, Template
from django.test import Client

from apps.identity import services

pytestmark = pytest.mark.django_db
PAGE = {"HTTP_ACCEPT": "text/html,application/xhtml+xml"}


def test_a_member_asking_for_an_owner_page_gets_a_403_page_with_the_way_back(
    member_client: Client,
) -> None:
    response = member_client.get("/people/", **PAGE)

    assert response.status_code == 403
    page = response.content.decode()
    assert "Not for your role" in page
    assert 'aria-label="Main"' in page  # the navigation, as on every page
    assert 'href="/chat/"' in page
    assert ">Home</a>" in page and ">Back</a>" in page


def test_an_unknown_page_is_a_404_page_with_the_navigation(owner_client: Client) -> None:
    response = owner_client.get("/no-such-page/", **PAGE)

    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page
    assert 'aria-label="Main"' in page and ">Home</a>" in page


def test_someone_logged_out_on_a_404_is_offered_the_login(owner: Any, client: Client) -> None:
    page = client.get("/no-such-page/", **PAGE).content.decode()

    assert 'href="/login/"' in page
    assert "Log out" not in page


def test_opening_a_form_only_address_is_a_405_page_that_keeps_its_allow_header(
    owner_client: Client,
) -> None:
    response = owner_client.get("/system/probe", **PAGE)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    page = response.content.decode()
    assert "Not a page to open" in page and 'aria-label="Main"' in page


def test_programs_keep_their_plain_and_json_answers(owner_client: Client) -> None:
    assert owner_client.get("/auth/login", **PAGE).content == b""  # a 405 with no page
    assert owner_client.get("/system/probe").content == b""  # not asked for as a page

    unknown = owner_client.get("/v1/nowhere", **PAGE)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_url"
    assert owner_client.get("/api/nothing-here").json()["error"]["code"] == "not_found"


def test_a_page_that_fails_is_a_500_page_with_the_navigation(settings: Any, owner: Any) -> None:
    settings.ROOT_URLCONF = "tests.dashboard.urls"
    client = Client(raise_request_exception=False)
    client.force_login(owner)

    response = client.get("/broken/", **PAGE)

    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page
    assert 'aria-label="Main"' in page and ">Home</a>" in page


def test_the_500_page_needs_no_database_when_the_database_is_what_failed(
    settings: Any, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ROOT_URLCONF = "tests.dashboard.urls"
    client = Client(raise_request_exception=False)
    client.force_login(owner)

    def database_gone(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database is gone")

    # The error page's own rendering fails (as it would without a database): the plain
    # page still answers, with the way home.
    monkeypatch.setattr("sovereign.dashboard.render", database_gone)
    response = client.get("/broken/", **PAGE)

    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page and 'href="/"' in page


def test_the_favicon_answers_before_and_after_the_claim(client: Client, keys: Any) -> None:
    before = client.get("/favicon.ico")
    assert before.status_code == 302
    assert before["Location"].endswith("img/icon-32.png")

    services.node_claim(keys["owner"].public_key().to_hex())
    assert client.get("/favicon.ico")["Location"] == before["Location"]


def test_every_page_links_the_icon_and_the_manifest(owner_client: Client) -> None:
    page = owner_client.get("/keys/").content.decode()

    assert 'rel="icon"' in page and "img/icon.svg" in page
    assert 'rel="apple-touch-icon"' in page
    assert 'rel="manifest"' in page
    assert 'src="/static/js/ui.js" defer' in page


def test_no_theme_cookie_follows_the_system(owner_client: Client) -> None:
    page = owner_client.get("/keys/").content.decode()
    assert '<html lang="en">' in page


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_theme_cookie_is_served_in_the_page(owner_client: Client, theme: str) -> None:
    owner_client.cookies["theme"] = theme
    page = owner_client.get("/keys/").content.decode()
    assert f'<html lang="en" data-theme="{theme}">' in page


def test_an_unknown_theme_value_is_ignored(owner_client: Client) -> None:
    owner_client.cookies["theme"] = '"><script>'
    page = owner_client.get("/keys/").content.decode()
    assert '<html lang="en">' in page


def test_the_theme_form_without_javascript_keeps_the_choice_and_goes_back(
    owner_client: Client,
) -> None:
    response = owner_client.post("/theme/", {"theme": "dark", "next": "/keys/"})

    assert response["Location"] == "/keys/"
    assert response.cookies["theme"].value == "dark"
    assert 'data-theme="dark"' in owner_client.get("/keys/").content.decode()

    back_to_system = owner_client.post("/theme/", {"theme": "", "next": "/keys/"})
    assert back_to_system.cookies["theme"].value == ""
    assert '<html lang="en">' in owner_client.get("/keys/").content.decode()


def test_the_theme_form_never_sends_anyone_off_the_node(owner_client: Client) -> None:
    response = owner_client.post("/theme/", {"theme": "dark", "next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_a_page_can_add_a_stylesheet_and_a_body_class_such_as_the_chats_wide(
    rf: Any, owner: Any
) -> None:
    page = Template(
        '{% extends "base.html" %}{% block head %}<link rel="stylesheet" href="/chat.css">'
        "{% endblock %}{% block body_class %}wide{% endblock %}"
    )
    request = rf.get("/chat/")
    request.user = owner

    rendered = page.render(RequestContext(request))

    assert '<link rel="stylesheet" href="/chat.css">\n</head>' in rendered
    assert '<body class="wide">' in rendered
