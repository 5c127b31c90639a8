"""`manage.py providers add|list|remove|test|trust`: outside providers, from a shell; and
`manage.py providers route set|list|remove`: the routes (`route/<name>`) across their models.

An API key is read from a file or an environment variable, never from the command line itself,
where the process list and the shell's history would keep it; no subcommand prints one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.identity.management.database import SHELL, database_ready
from apps.providers import routing, services, shown
from apps.providers.models import Provider, Route
from apps.providers.services import ProviderError
from apps.wallet.templatetags.wallet import sats

KINDS = ", ".join(Provider.Kind.values)
POLICIES = " or ".join(Route.Policy.values)


class Command(BaseCommand):
    help = (
        "Add, list, test or remove the outside providers whose models members may ask; "
        "set, list or remove the routes across models."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="add a provider and read its models and prices")
        add.add_argument("url", help="its base URL, such as https://api.ppq.ai")
        add.add_argument("--kind", required=True, help=f"how it is paid: {KINDS}")
        add.add_argument("--name", required=True, help="short, lower case: its models' prefix")
        key = add.add_mutually_exclusive_group()
        key.add_argument("--api-key-file", help="a file holding the API key it asks for")
        key.add_argument("--api-key-env", help="an environment variable holding the API key")
        actions.add_parser("list", help="each provider, its models and prices, its record")
        remove = actions.add_parser("remove", help="remove a provider and what was kept of it")
        remove.add_argument("name")
        test = actions.add_parser("test", help="read a provider's models and prices again")
        test.add_argument("name")
        trust = actions.add_parser(
            "trust", help="send a provider what members write, unredacted (--off: redact again)"
        )
        trust.add_argument("name")
        trust.add_argument("--off", action="store_true", help="redact for it again")
        self._add_route_arguments(actions.add_parser("route", help="routes across models"))

    def _add_route_arguments(self, route: CommandParser) -> None:
        actions = route.add_subparsers(dest="route_action", required=True)
        set_ = actions.add_parser("set", help="define route/NAME, or replace its models")
        set_.add_argument("name", help="lower case: members ask for route/NAME")
        set_.add_argument("--policy", required=True, help=f"how it picks a model: {POLICIES}")
        set_.add_argument("models", nargs="+", help="its models in order, as `list` names them")
        actions.add_parser("list", help="each route, its models in order and what it costs")
        remove = actions.add_parser("remove", help="remove route/NAME")
        remove.add_argument("name")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        database_ready()
        if action == "route":
            action = f"route_{options['route_action']}"
        try:
            getattr(self, f"_{action}")(**options)
        except ProviderError as error:
            raise CommandError(str(error)) from None

    def _add(self, url: str, kind: str, name: str, **options: Any) -> None:
        api_key = _api_key(options.get("api_key_file"), options.get("api_key_env"))
        provider = services.provider_add(url, kind=kind, name=name, api_key=api_key, actor=SHELL)
        self.stdout.write(f"Added {provider.name} ({provider.kind}) at {provider.base_url}:")
        self._models(shown.provider_shown(provider))

    def _list(self, **options: Any) -> None:
        providers = shown.providers_shown()
        if not providers:
            self.stdout.write("No outside provider yet: `manage.py providers add URL ...`.")
        for provider in providers:
            key = ", with an API key" if provider.has_api_key else ""
            trusted = "  trusted: nothing redacted" if provider.trusted else ""
            self.stdout.write(
                f"{provider.name}  {provider.kind}  {provider.base_url}{key}{trusted}"
            )
            self._models(provider)
            self.stdout.write(f"  record: {provider.record_line}")
            if provider.credentials_kept:
                self.stdout.write(f"  kept: {_kept(provider)}")
            if provider.catalog_error:
                self.stdout.write(f"  last test failed: {provider.catalog_error}")

    def _remove(self, name: str, **options: Any) -> None:
        services.provider_remove(name, actor=SHELL)
        self.stdout.write(f"Removed {name}.")

    def _test(self, name: str, **options: Any) -> None:
        services.provider_test(name)
        self.stdout.write(f"{name} answered; its models and prices now:")
        self._models(shown.provider_shown(services.provider_get(name)))

    def _trust(self, name: str, off: bool, **options: Any) -> None:
        changed = services.provider_trust(name, not off, actor=SHELL)
        now = "not trusted: private values are redacted" if off else "trusted: nothing redacted"
        self.stdout.write(f"{name} is {'now ' if changed else 'already '}{now}.")

    def _models(self, provider: shown.ProviderShown) -> None:
        for model in provider.models:
            self.stdout.write(f"  {model.name}  {model.price}")

    def _route_set(self, name: str, policy: str, models: list[str], **options: Any) -> None:
        route = routing.route_set(name, policy, models, actor=SHELL)
        self.stdout.write("Set:")
        self._route(shown.route_shown(route))

    def _route_list(self, **options: Any) -> None:
        routes = shown.routes_shown()
        if not routes:
            self.stdout.write(
                "No route yet: `manage.py providers route set NAME --policy fallback MODEL ...`."
            )
        for route in routes:
            self._route(route)

    def _route_remove(self, name: str, **options: Any) -> None:
        routing.route_remove(name, actor=SHELL)
        self.stdout.write(f"Removed {routing.PREFIX}/{name}.")

    def _route(self, route: shown.RouteShown) -> None:
        self.stdout.write(f"{route.name}  {route.policy}  {route.most}")
        self.stdout.write(f"  {route.policy_line}")
        for place, model in enumerate(route.models, start=1):
            self.stdout.write(f"  {place}. {model.name}  {model.price}")


def _api_key(path: str | None, variable: str | None) -> str:
    if path:
        try:
            key = Path(path).read_text().strip()
        except OSError as error:
            raise CommandError(f"The API key file cannot be read: {error.strerror}.") from None
        if not key:
            raise CommandError(f"The API key file {path} is empty.")
        return key
    if variable:
        key = os.environ.get(variable, "").strip()
        if not key:
            raise CommandError(f"The environment variable {variable} holds no API key.")
        return key
    return ""


def _kept(provider: shown.ProviderShown) -> str:
    kept = f"{provider.credentials_kept} credential{'s' if provider.credentials_kept > 1 else ''}"
    if provider.balance_msat is None:
        return kept
    return f"{kept}, balance {sats(provider.balance_msat)}"
