"""`manage.py providers add|list|remove|test` against a real OpenAI-shaped server on loopback,
and `providers route set|list|remove`: clear errors that change nothing, and no API key ever
printed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.audit.models import AuditEvent
from apps.providers.models import Credential, OutsideRequest, Provider, ProviderModel, Route
from tests.providers.catalog import LOCAL, models_in_catalog
from tests.providers.doubles.openai_shape import Handler, OpenAIShapedDouble
from tests.providers.doubles.openai_shape import Route as DoubleRoute

pytestmark = pytest.mark.django_db
KEY = "sk-home-network-secret"


class KeyedDouble(OpenAIShapedDouble):
    """A home-network server that lists its models only to a caller with its API key."""

    name = "keyed"

    def extra_routes(self) -> dict[tuple[str, str], DoubleRoute]:
        return {("GET", "/v1/models"): self._models}

    def _models(self, handler: Handler, body: dict[str, Any]) -> None:
        if handler.headers.get("Authorization") != f"Bearer {KEY}":
            handler.send_json(401, {"error": {"message": "Invalid API key."}})
            return
        data = [self.model_entry(model) for model in self.models]
        handler.send_json(200, {"object": "list", "data": data})


@pytest.fixture
def lan() -> Iterator[OpenAIShapedDouble]:
    with OpenAIShapedDouble() as double:
        yield double


@pytest.fixture
def keyed() -> Iterator[KeyedDouble]:
    with KeyedDouble() as double:
        yield double


def providers(*argv: str) -> str:
    """What `manage.py providers ...` printed; a CommandError is raised as the shell shows it."""
    out = io.StringIO()
    call_command("providers", *argv, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*argv: str) -> str:
    with pytest.raises(CommandError) as error:
        providers(*argv)
    return str(error.value)


def test_add_reads_the_models_and_list_shows_them_free_with_their_record(
    lan: OpenAIShapedDouble,
) -> None:
    added = providers("add", lan.url, "--kind", "openai", "--name", "lan")

    assert added.startswith(f"Added lan (openai) at {lan.url}:")
    assert "lan/strong-1  free (home network)" in added
    listed = providers("list")
    assert f"lan  openai  {lan.url}\n" in listed
    assert "  lan/strong-1  free (home network)\n  lan/strong-2  free (home network)" in listed
    assert "record: 0 requests, 0 failures, 0 timeouts, 0 refused invoices" in listed
    event = AuditEvent.objects.get(action="provider_added")
    assert (event.actor, event.subject) == ("shell", "lan")


def test_list_shows_prices_in_sats_the_record_and_what_is_kept() -> None:
    paid = Provider.objects.create(
        name="aperture",
        kind="l402",
        base_url="https://l402.example",
        max_price_msat=100_000,
        topup_msat=1_000_000,
    )
    ProviderModel.objects.create(provider=paid, model_id="fixed", request_msat=21_000)
    ProviderModel.objects.create(provider=paid, model_id="unpriced")
    for outcome, cost in [("answered", 21_000), ("failed", 0), ("timeout", 0)]:
        OutsideRequest.objects.create(
            provider=paid,
            model_id="fixed",
            request_id=outcome,
            outcome=outcome,
            cost_msat=cost,
            completion_tokens=42 if cost else 0,
            first_token_ms=250,
        )
    Credential.objects.create(provider=paid, scheme="L402", state="live", balance_msat=5_000)

    listed = providers("list")

    assert "  aperture/fixed  21 sat a request" in listed
    assert "  aperture/unpriced  up to 100 sat a request (no published price" in listed
    record = "record: 3 requests, 1 failure, 1 timeout, 0 refused invoices, first token after "
    assert record + "250 ms on average, 500 sat per 1,000 tokens" in listed
    assert "kept: 1 credential, balance 5 sat" in listed


def test_an_api_key_from_a_file_or_the_environment_is_used_and_never_printed(
    keyed: KeyedDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("HOME_KEY", KEY)

    printed = providers(
        "add", keyed.url, "--kind", "openai", "--name", "one", "--api-key-file", str(key_file)
    )
    printed += providers(
        "add", keyed.url, "--kind", "openai", "--name", "two", "--api-key-env", "HOME_KEY"
    )
    printed += providers("list") + providers("test", "two")

    assert "one/strong-1" in printed and "two/strong-2" in printed
    assert "with an API key" in printed
    assert KEY not in printed
    assert KEY not in "".join(AuditEvent.objects.values_list("detail", flat=True))


def test_a_server_that_wants_a_key_is_not_added_without_one(keyed: KeyedDouble) -> None:
    error = refused("add", keyed.url, "--kind", "openai", "--name", "keyed")

    assert "answered 401" in error
    assert not Provider.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["ftp://example.org", "--kind", "openai", "--name", "x"], "must start with http"),
        (["http://127.0.0.1:9", "--kind", "bitcoin", "--name", "x"], "Unknown kind 'bitcoin'"),
        (["http://127.0.0.1:9", "--kind", "openai", "--name", "Has Space"], "The name must be"),
        (["http://127.0.0.1:9", "--kind", "openai", "--name", "gone"], "cannot be reached"),
        (
            ["http://127.0.0.1:9", "--kind", "openai", "--name", "x", "--api-key-env", "NO_SUCH"],
            "NO_SUCH holds no API key",
        ),
        (
            [
                "http://127.0.0.1:9",
                "--kind",
                "openai",
                "--name",
                "x",
                "--api-key-file",
                "/nonexistent",
            ],
            "cannot be read",
        ),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(argv: list[str], says: str) -> None:
    assert says in refused("add", *argv)
    assert not Provider.objects.exists() and not AuditEvent.objects.exists()


def test_a_name_taken_is_refused_and_the_first_provider_stays(lan: OpenAIShapedDouble) -> None:
    providers("add", lan.url, "--kind", "openai", "--name", "lan")

    assert "already a provider named 'lan'" in refused(
        "add", "http://127.0.0.1:9", "--kind", "openai", "--name", "lan"
    )
    assert Provider.objects.get().base_url == lan.url


def test_test_reads_the_catalog_again_and_says_when_the_provider_is_gone(
    lan: OpenAIShapedDouble,
) -> None:
    providers("add", lan.url, "--kind", "openai", "--name", "lan")
    lan.models = ("strong-3",)

    assert "lan/strong-3  free" in providers("test", "lan")
    assert list(ProviderModel.objects.values_list("model_id", flat=True)) == ["strong-3"]
    lan.stop()
    assert "cannot be reached" in refused("test", "lan")
    assert list(ProviderModel.objects.values_list("model_id", flat=True)) == ["strong-3"]
    assert "last test failed: The provider cannot be reached" in providers("list")


def test_remove_takes_the_provider_and_its_models_away_and_is_audited(
    lan: OpenAIShapedDouble,
) -> None:
    providers("add", lan.url, "--kind", "openai", "--name", "lan")

    assert providers("remove", "lan") == "Removed lan.\n"
    assert not Provider.objects.exists() and not ProviderModel.objects.exists()
    assert AuditEvent.objects.get(action="provider_removed").actor == "shell"
    assert "There is no provider named 'lan'" in refused("remove", "lan")
    assert "There is no provider named 'nope'" in refused("test", "nope")
    assert providers("list").startswith("No outside provider yet")


# Routes ----------------------------------------------------------------------------------


def test_route_set_list_and_remove_show_the_models_in_order_with_their_prices() -> None:
    models_in_catalog()

    set_ = providers(
        "route", "set", "strong", "--policy", "fallback", "ppq/gpt-4o", LOCAL, "ppq/llama-3.3-70b"
    )

    assert set_.startswith("Set:\nroute/strong  fallback  at most 21 sat a request\n")
    assert "  Tries the models in this order" in set_
    providers("route", "set", "private", "--policy", "spread", "ppq/llama-3.3-70b", LOCAL)
    listed = providers("route", "list")
    assert (
        "route/private  spread  at most 5 sat a request\n"
        "  Gives each new conversation to the model the member has used least" in listed
    )
    assert (
        "  1. ppq/gpt-4o  21 sat a request\n"
        f"  2. {LOCAL}  free (on this node)\n"
        "  3. ppq/llama-3.3-70b  5 sat a request\n" in listed
    )
    assert listed.index("route/private") < listed.index("route/strong")
    assert providers("route", "remove", "strong") == "Removed route/strong.\n"
    assert list(Route.objects.values_list("name", flat=True)) == ["private"]
    events = AuditEvent.objects.order_by("id")
    assert [(e.action, e.actor, e.subject) for e in events] == [
        ("route_set", "shell", "route/strong"),
        ("route_set", "shell", "route/private"),
        ("route_removed", "shell", "route/strong"),
    ]


def test_setting_a_route_again_replaces_its_policy_and_models() -> None:
    models_in_catalog()
    providers("route", "set", "strong", "--policy", "fallback", "ppq/gpt-4o")

    providers("route", "set", "strong", "--policy", "spread", LOCAL, "ppq/gpt-4o")

    route = Route.objects.get()
    assert (route.policy, route.model_names) == ("spread", [LOCAL, "ppq/gpt-4o"])


def test_a_model_the_catalog_no_longer_lists_is_shown_as_skipped() -> None:
    models_in_catalog()
    providers("route", "set", "strong", "--policy", "fallback", "ppq/gpt-4o", LOCAL)
    ProviderModel.objects.filter(model_id="gpt-4o").delete()

    listed = providers("route", "list")

    assert "route/strong  fallback  free\n" in listed
    assert "  1. ppq/gpt-4o  no longer listed: skipped\n" in listed


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["strong", "--policy", "fallback", "ppq/no-such"],
            "There is no model named 'ppq/no-such'",
        ),
        (["strong", "--policy", "fallback", "ppq/gpt-4o", "nowhere"], "no model named 'nowhere'"),
        (["strong", "--policy", "gold", "ppq/gpt-4o"], "Unknown policy 'gold'"),
        (["strong", "--policy", "spread", "ppq/gpt-4o"], "A spread route names 2 to 8 models"),
        (["Strong Route", "--policy", "fallback", "ppq/gpt-4o"], "A route's name must be"),
        (["strong", "--policy", "fallback", "ppq/gpt-4o", "ppq/gpt-4o"], "each model once"),
        (["strong", "--policy", "fallback", "route/other"], "cannot name another route"),
    ],
)
def test_a_bad_route_is_refused_with_the_reason_and_nothing_changes(
    argv: list[str], says: str
) -> None:
    models_in_catalog()
    providers("route", "set", "strong", "--policy", "fallback", LOCAL)
    AuditEvent.objects.all().delete()

    assert says in refused("route", "set", *argv)

    route = Route.objects.get()
    assert (route.name, route.policy, route.model_names) == ("strong", "fallback", [LOCAL])
    assert not AuditEvent.objects.exists()


def test_removing_a_route_that_is_not_there_is_refused_and_list_says_there_is_none() -> None:
    assert "There is no route named 'gone'" in refused("route", "remove", "gone")
    assert providers("route", "list").startswith("No route yet: `manage.py providers route set")
    assert not AuditEvent.objects.exists()
