"""Routes: an owner's named list of models, asked for as the model `route/<name>`.

- `fallback` tries the route's models in the owner's order until one answers.
- `spread` gives each new conversation to the model of the route this member has used least,
  so no one provider sees all of a member's conversations; a conversation stays with the model
  that answered its first question.

Either way, a model that fails before its first token is passed over for the next (the answer
pipeline does the trying), and the reliable are preferred: a provider that failed, timed out or
sent an unacceptable invoice in at least 3 of its last 5 requests of the past hour is tried
after every other model. The hour lets it back in once nobody has asked it for a while: a
provider tried last is rarely tried at all, so its record would otherwise never mend.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from apps.audit.services import audit_record
from apps.identity.models import Member
from apps.inference.models import LocalModel
from apps.providers import services
from apps.providers.models import NAME_PATTERN, OutsideRequest, Route, RouteChoice

PREFIX = "route"  # routes are asked for as `route/<name>`: no provider may take this name
MOST_MODELS = 8
RECENT_REQUESTS = 5
BAD_OF_RECENT = 3
RECENT_WINDOW = timedelta(hours=1)
_BAD = (
    OutsideRequest.Outcome.FAILED,
    OutsideRequest.Outcome.TIMEOUT,
    OutsideRequest.Outcome.INVOICE_REFUSED,
)
# Not the provider's doing: the household's budgets, a payment whose outcome is unknown, or
# the member stopping the answer.
_NOT_ITS_DOING = (
    OutsideRequest.Outcome.OVER_BUDGET,
    OutsideRequest.Outcome.PAYMENT_PENDING,
    OutsideRequest.Outcome.STOPPED,
)


class RouteError(services.ProviderError):
    """A route that cannot be set or removed as asked; nothing was changed."""


@dataclass(frozen=True)
class Plan:
    """How one request goes along a route: its models in the order they are tried."""

    route_id: int
    name: str  # route/<name>
    policy: str
    models: list[str]
    choose: bool  # spread, with no kept choice: the model that answers becomes the choice


def route_name(model: str) -> str | None:
    """The route's own name when `model` is `route/<name>`, else None."""
    prefix, slash, name = model.partition("/")
    return name if slash and prefix == PREFIX else None


# The owner's routes ---------------------------------------------------------------------


def route_set(name: str, policy: str, models: list[str], actor: str = "") -> Route:
    """Define the route `route/<name>` (or replace its policy and models)."""
    if not re.match(NAME_PATTERN, name or ""):
        raise RouteError(
            "A route's name must be 1 to 40 lower-case letters, digits or dashes, such as 'strong'."
        )
    if policy not in Route.Policy.values:
        raise RouteError(f"Unknown policy '{policy}': use fallback or spread.")
    _check_models(policy, models)
    with transaction.atomic():
        route, _ = Route.objects.update_or_create(
            name=name, defaults={"policy": policy, "model_names": list(models)}
        )
        detail = f"{policy}: {', '.join(models)}"
        audit_record("route_set", actor=actor, subject=f"{PREFIX}/{name}", detail=detail)
    return route


def route_remove(name: str, actor: str = "") -> None:
    with transaction.atomic():
        removed, _ = Route.objects.filter(name=name).delete()
        if not removed:
            raise RouteError(f"There is no route named '{name}'.")
        audit_record("route_removed", actor=actor, subject=f"{PREFIX}/{name}")


def routes_list() -> list[Route]:
    return list(Route.objects.all())


def _check_models(policy: str, models: list[str]) -> None:
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise RouteError("A route's models are a list of model names.")
    least = 2 if policy == Route.Policy.SPREAD else 1
    if not least <= len(models) <= MOST_MODELS:
        raise RouteError(f"A {policy} route names {least} to {MOST_MODELS} models.")
    if len(set(models)) != len(models):
        raise RouteError("A route names each model once.")
    for model in models:
        if route_name(model) is not None:
            raise RouteError(f"A route cannot name another route ('{model}').")
        if not _exists(model):
            raise RouteError(
                f"There is no model named '{model}': a route names local models, or outside "
                "ones as <provider>/<model id> as the Providers page lists them."
            )


def _exists(model: str) -> bool:
    return _is_local(model) or services.route_for(model) is not None


def _is_local(model: str) -> bool:
    return LocalModel.objects.filter(name=model).exists()


# What a member may ask -------------------------------------------------------------------


def usable_models(route: Route, *, outside: bool) -> list[str]:
    """The route's models that exist now and that this member may use (outside ones only if
    `outside`), in the owner's order."""
    return [
        model
        for model in route.model_names
        if _is_local(model) or (outside and services.route_for(model) is not None)
    ]


def route_price_msat(models: list[str], max_tokens: int) -> int:
    """What one answer along the route may cost: the highest price among its models."""
    prices = [0]
    for model in models:
        outside = services.route_for(model)
        if outside is not None:
            prices.append(outside.price_msat(max_tokens))
    return max(prices)


# One request along a route ---------------------------------------------------------------


def plan_for(member: Member, name: str, conversation_key: str | None, *, outside: bool) -> Plan:
    """The order in which this request tries the route's models; RouteError if there is no
    such route or none of its models is there for this member."""
    route = Route.objects.filter(name=name).first()
    models = usable_models(route, outside=outside) if route is not None else []
    if route is None or not models:
        raise RouteError(f"There is no route named '{PREFIX}/{name}'.")
    ordered, unreliable = reliability_order(models)
    if route.policy == Route.Policy.FALLBACK:
        return Plan(route.pk, f"{PREFIX}/{name}", route.policy, ordered, choose=False)
    kept = _kept_choice(route, member, conversation_key)
    first = kept if kept in ordered else _least_used(route, member, ordered, unreliable)
    rest = [model for model in ordered if model != first]
    return Plan(route.pk, f"{PREFIX}/{name}", route.policy, [first, *rest], choose=first != kept)


def choice_record(plan: Plan, member: Member, conversation_key: str | None, model: str) -> None:
    """A spread request has begun its answer with `model`: its conversation stays with it,
    and it counts as one more use of that model by this member."""
    if not plan.choose:
        return
    key = _key(conversation_key)
    if not key:
        RouteChoice.objects.create(route_id=plan.route_id, member=member, model=model)
        return
    RouteChoice.objects.update_or_create(
        route_id=plan.route_id, member=member, conversation_key=key, defaults={"model": model}
    )


def reliability_order(models: list[str]) -> tuple[list[str], set[str]]:
    """The models in the owner's order, those of an unreliable provider moved to the end; and
    which they are. A local model has no provider record and is never moved."""
    local = set(LocalModel.objects.filter(name__in=models).values_list("name", flat=True))
    providers = {model.partition("/")[0] for model in models if model not in local}
    bad = {provider for provider in providers if provider_unreliable(provider)}
    unreliable = {m for m in models if m not in local and m.partition("/")[0] in bad}
    ordered = [m for m in models if m not in unreliable] + [m for m in models if m in unreliable]
    return ordered, unreliable


def provider_unreliable(provider_name: str) -> bool:
    """At least 3 of its last 5 requests of the past hour failed, timed out, or sent an
    invoice that was refused."""
    recent = (
        OutsideRequest.objects.filter(
            provider__name=provider_name, created_at__gte=timezone.now() - RECENT_WINDOW
        )
        .exclude(outcome__in=_NOT_ITS_DOING)
        .order_by("-created_at", "-id")
        .values_list("outcome", flat=True)[:RECENT_REQUESTS]
    )
    return sum(outcome in _BAD for outcome in recent) >= BAD_OF_RECENT


def _kept_choice(route: Route, member: Member, conversation_key: str | None) -> str | None:
    key = _key(conversation_key)
    if not key:
        return None
    kept = RouteChoice.objects.filter(route=route, member=member, conversation_key=key)
    return kept.values_list("model", flat=True).first()


def _least_used(route: Route, member: Member, ordered: list[str], unreliable: set[str]) -> str:
    """The model this member has used least on this route; ties go by `ordered`. An
    unreliable one only when every reliable one is: one that fails is never chosen, so it
    would stay the least used for ever."""
    counted = (
        RouteChoice.objects.filter(route=route, member=member, model__in=ordered)
        .values("model")
        .annotate(uses=Count("id"))
    )
    uses = {row["model"]: row["uses"] for row in counted}
    return min(ordered, key=lambda m: (m in unreliable, uses.get(m, 0), ordered.index(m)))


def _key(conversation_key: str | None) -> str:
    """The conversation's key as stored: a long one by its digest."""
    key = conversation_key or ""
    if len(key) > 64:
        return hashlib.sha256(key.encode()).hexdigest()
    return key
