"""The owner's Providers page: adding, testing and removing a provider against a real server on
loopback, what each provider shows, setting and removing routes, and nobody else getting in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.providers.models import Credential, OutsideRequest, Provider, ProviderModel, Route
from tests.providers.catalog import LOCAL, models_in_catalog
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = pytest.mark.django_db


@pytest.fixture
def lan() -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        yield double


def add(client: Client, url: str, name: str = "lan", kind: str = "openai", key: str = "") -> str:
    form = {"url": url, "kind": kind, "name": name, "api_key": key}
    return client.post("/providers/add", form, follow=True).content.decode()


def test_the_owner_adds_a_provider_and_sees_its_models_free_on_the_home_network(
    owner_client: Client, owner: Any, lan: OpenAIShapedDouble
) -> None:
    page = add(owner_client, lan.url + "/v1", key="sk-kept-secret")

    assert "Added lan: 2 models listed." in page
    assert "lan/strong-1" in page and "lan/strong-2" in page
    assert "free (home network)" in page and "with an API key" in page
    assert "sk-kept-secret" not in page
    provider = Provider.objects.get()
    assert (provider.name, provider.kind, provider.base_url) == ("lan", "openai", lan.url)
    assert AuditEvent.objects.get(action="provider_added").actor == owner.pubkey


def test_test_reads_the_models_again_and_remove_takes_the_provider_away(
    owner_client: Client, owner: Any, lan: OpenAIShapedDouble
) -> None:
    add(owner_client, lan.url)
    lan.models = ("strong-3",)

    tested = owner_client.post("/providers/lan/test", follow=True).content.decode()
    assert "lan answered: 1 model, prices read again." in tested
    assert "lan/strong-3" in tested and "lan/strong-1" not in tested

    lan.stop()
    failed = owner_client.post("/providers/lan/test", follow=True).content.decode()
    assert "lan did not answer as expected: The provider cannot be reached" in failed
    assert "The last test failed" in failed

    removed = owner_client.post("/providers/lan/remove", follow=True).content.decode()
    assert "Removed lan: its models are no longer offered." in removed
    assert not Provider.objects.exists() and not ProviderModel.objects.exists()
    assert AuditEvent.objects.get(action="provider_removed").actor == owner.pubkey
    assert 'data-confirm="Remove lan?' in tested  # the site's dialog asks first


@pytest.mark.parametrize(
    ("url", "name", "kind", "says"),
    [
        ("not a url", "bad", "openai", "must start with http"),
        ("http://127.0.0.1:9", "Bad Name", "openai", "The name must be"),
        ("http://127.0.0.1:9", "bad", "gold", "Unknown kind"),
        ("http://127.0.0.1:9", "bad", "openai", "cannot be reached"),
    ],
)
def test_bad_input_is_said_and_changes_nothing(
    owner_client: Client, url: str, name: str, kind: str, says: str
) -> None:
    page = add(owner_client, url, name, kind)

    assert "Not added:" in page and says in page
    assert not Provider.objects.exists() and not AuditEvent.objects.exists()


def test_a_taken_name_is_refused_and_the_first_provider_stays(
    owner_client: Client, lan: OpenAIShapedDouble
) -> None:
    add(owner_client, lan.url)

    page = add(owner_client, "http://127.0.0.1:9")

    assert "There is already a provider named" in page
    assert Provider.objects.get().base_url == lan.url


def test_a_paying_provider_shows_its_prices_record_and_kept_balance(owner_client: Client) -> None:
    paid = Provider.objects.create(
        name="ppq",
        kind="prepaid",
        base_url="https://api.ppq.ai",
        max_price_msat=100_000,
        topup_msat=1_000_000,
    )
    ProviderModel.objects.create(provider=paid, model_id="fixed", request_msat=21_500)
    ProviderModel.objects.create(
        provider=paid, model_id="per-token", completion_msat_per_1k=2_000_000
    )
    OutsideRequest.objects.create(
        provider=paid,
        model_id="fixed",
        request_id="a",
        outcome="answered",
        cost_msat=21_500,
        completion_tokens=100,
        first_token_ms=420,
    )
    OutsideRequest.objects.create(
        provider=paid, model_id="fixed", request_id="b", outcome="invoice_refused"
    )
    Credential.objects.create(provider=paid, scheme="Bearer", state="live", balance_msat=978_500)

    page = owner_client.get("/providers/").content.decode()

    assert "21.500 sat a request" in page
    assert "up to 1,024 sat a request of 512 tokens" in page
    assert "<dt>Requests</dt><dd>2</dd>" in page
    assert "<dt>Refused invoices</dt><dd>1</dd>" in page
    assert "<dt>First token, mean</dt><dd>420 ms</dd>" in page
    assert "<dt>Per 1,000 tokens</dt><dd>215 sat</dd>" in page
    assert "<dt>Kept credentials</dt><dd>1, balance 978.500 sat</dd>" in page


def test_members_and_friends_are_refused_and_see_no_link(
    member_client: Client, friend_client: Client, owner_client: Client, lan: OpenAIShapedDouble
) -> None:
    for client in (member_client, friend_client):
        assert client.get("/providers/").status_code == 403
        assert (
            client.post(
                "/providers/add", {"url": lan.url, "kind": "openai", "name": "lan"}
            ).status_code
            == 403
        )
        assert 'href="/providers/"' not in client.get("/keys/").content.decode()
    assert not Provider.objects.exists()
    assert Client().get("/providers/").status_code == 302  # to the login page
    assert 'href="/providers/"' in owner_client.get("/keys/").content.decode()


def test_changes_are_posted_only(owner_client: Client, lan: OpenAIShapedDouble) -> None:
    add(owner_client, lan.url)

    assert owner_client.get("/providers/lan/remove").status_code == 405
    assert Provider.objects.exists()


# Routes ----------------------------------------------------------------------------------


def set_route(client: Client, name: str, policy: str, *models: str) -> str:
    """The form as a browser sends it: eight model rows, the ones left empty sent empty."""
    rows = [*models, *[""] * (8 - len(models))]
    form = {"name": name, "policy": policy, "models": rows}
    return client.post("/providers/routes/set", form, follow=True).content.decode()


def test_the_form_offers_every_model_with_its_price_and_explains_each_policy(
    owner_client: Client,
) -> None:
    models_in_catalog()

    page = owner_client.get("/providers/").content.decode()

    assert "No route yet" in page
    assert page.count('<select id="route-model-') == 8 and '<label for="route-model-8">8th<' in page
    assert f'<option value="{LOCAL}">{LOCAL} · free (on this node)</option>' in page
    assert '<option value="ppq/gpt-4o">ppq/gpt-4o · 21 sat a request</option>' in page
    assert "Tries the models in this order: when one fails or times out" in page
    assert "Gives each new conversation to the model the member has used least" in page


def test_the_owner_sets_a_route_and_sees_its_models_in_order_with_their_prices(
    owner_client: Client, owner: Any
) -> None:
    models_in_catalog()

    page = set_route(owner_client, "strong", "fallback", "ppq/gpt-4o", "", LOCAL)

    assert "Set route/strong: 2 models." in page
    route = Route.objects.get()
    assert (route.name, route.policy, route.model_names) == (
        "strong",
        "fallback",
        ["ppq/gpt-4o", LOCAL],
    )
    listed = page[page.index('id="route-strong"') :]
    assert "<code>route/strong</code>" in listed and "at most 21 sat a request" in listed
    assert listed.index("ppq/gpt-4o") < listed.index(LOCAL) < listed.index("free (on this node)")
    assert 'data-confirm="Remove route/strong?' in listed
    event = AuditEvent.objects.get(action="route_set")
    assert (event.actor, event.subject) == (owner.pubkey, "route/strong")


def test_change_fills_the_form_with_the_route_and_setting_it_again_replaces_it(
    owner_client: Client,
) -> None:
    models_in_catalog()
    set_route(owner_client, "strong", "fallback", "ppq/gpt-4o", LOCAL)

    form = owner_client.get("/providers/?route=strong").content.decode()
    assert "Change route/strong</h3>" in form and 'value="strong"' in form
    assert '<option value="ppq/gpt-4o" selected>' in form
    assert form.index('<option value="ppq/gpt-4o" selected>') < form.index(
        f'<option value="{LOCAL}" selected>'
    )
    set_route(owner_client, "strong", "spread", "ppq/llama-3.3-70b", LOCAL)

    route = Route.objects.get()
    assert (route.policy, route.model_names) == ("spread", ["ppq/llama-3.3-70b", LOCAL])


def test_the_owner_removes_a_route(owner_client: Client, owner: Any) -> None:
    models_in_catalog()
    set_route(owner_client, "strong", "fallback", LOCAL)

    page = owner_client.post("/providers/routes/strong/remove", follow=True).content.decode()

    assert "Removed route/strong: members can no longer ask for it." in page
    assert not Route.objects.exists()
    assert AuditEvent.objects.get(action="route_removed").actor == owner.pubkey
    gone = owner_client.post("/providers/routes/strong/remove", follow=True).content.decode()
    assert "There is no route named &#x27;strong&#x27;." in gone


@pytest.mark.parametrize(
    ("name", "policy", "models", "says"),
    [
        ("strong", "fallback", ["ppq/no-such"], "There is no model named &#x27;ppq/no-such&#x27;"),
        ("strong", "fallback", [], "A fallback route names 1 to 8 models."),
        ("strong", "spread", ["ppq/gpt-4o"], "A spread route names 2 to 8 models."),
        ("strong", "", ["ppq/gpt-4o"], "Unknown policy"),
        ("Strong!", "fallback", ["ppq/gpt-4o"], "A route&#x27;s name must be"),
        ("strong", "fallback", ["ppq/gpt-4o", "ppq/gpt-4o"], "A route names each model once."),
    ],
)
def test_a_bad_route_shows_the_reason_and_changes_nothing(
    owner_client: Client, name: str, policy: str, models: list[str], says: str
) -> None:
    models_in_catalog()
    set_route(owner_client, "strong", "fallback", LOCAL)
    AuditEvent.objects.all().delete()

    page = set_route(owner_client, name, policy, *models)

    assert "Route not set: " + says in page
    route = Route.objects.get()
    assert (route.name, route.policy, route.model_names) == ("strong", "fallback", [LOCAL])
    assert not AuditEvent.objects.exists()


def test_members_and_friends_can_neither_set_nor_remove_a_route(
    member_client: Client, friend_client: Client, owner_client: Client
) -> None:
    models_in_catalog()
    set_route(owner_client, "strong", "fallback", LOCAL)

    form = {"name": "mine", "policy": "fallback", "models": ["ppq/gpt-4o"]}
    for client in (member_client, friend_client):
        assert client.post("/providers/routes/set", form).status_code == 403
        assert client.post("/providers/routes/strong/remove").status_code == 403
    assert list(Route.objects.values_list("name", flat=True)) == ["strong"]
    assert owner_client.get("/providers/routes/strong/remove").status_code == 405


def test_with_no_model_at_all_the_page_says_so_instead_of_an_empty_form(
    owner_client: Client,
) -> None:
    page = owner_client.get("/providers/").content.decode()

    assert "No model to route yet: add a provider above, or a model on the node." in page
    assert 'action="/providers/routes/set"' not in page
