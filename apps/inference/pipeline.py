"""The one entry point that answers every request: the chat, /v1, agents, and the node's own.

    answer(AnswerRequest) -> Events      (async; answer_sync for a Celery task)

It resolves the model's name to a route — a local model, `<provider>/<model id>` outside, or
an owner's `route/<name>` across several (apps/providers/routing.py: tried in order, each model
that fails before its first token passed over for the next) — and, for an outside model, runs
what leaving the node needs, each once, here: the member's allowance is checked before a byte
leaves, the privacy hook redacts the messages and restores the answer, the provider is paid
(within every budget) and the egress recorded (by apps/providers/calling.py, the one place
that talks to providers). A friend reaches only the models the owner shares with them, within
their daily quota (apps/sharing/services.py), counted here before anything else and by the
tokens each answer used. Every answer ends with one
`Done`, carrying its provenance (which model, file or provider answered, how, at what cost),
or one `Failed`; a request refused before its first token raises `AnswerRefused`.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

from apps.identity.models import Member, Role
from apps.inference.answering import Sampling, answer_collected, provenance
from apps.inference.backends.base import (
    PRIMING,
    AnswerRefused,
    BackendRequest,
    ChatBackend,
    Done,
    Events,
    Failed,
    RefusalCode,
    Token,
    primed,
)
from apps.inference.backends.engine import LocalEngine
from apps.inference.context_fit import Overflow
from apps.inference.engine_protocol import STRANGERS
from apps.inference.models import LocalModel
from apps.privacy import model_pass, redaction
from apps.privacy.policy import Policy, policy_now
from apps.privacy.vault import Vault
from apps.providers import calling, routing
from apps.providers import services as providers
from apps.providers.backends.chat import OutsideBackend
from apps.sharing import services as sharing
from apps.wallet import services as wallet

Message = dict[str, str]


class Origin(enum.StrEnum):
    CHAT = "chat"
    API = "api"
    AGENT = "agent"
    NODE = "node"  # the node's own asides: a conversation's title, a summary
    SALE = "sale"  # a stranger's paid request (apps/sharing): a local model on sale, nothing kept


@dataclass(frozen=True)
class AnswerRequest:
    member: Member  # who asks: whose allowance pays, whose records these are
    origin: Origin
    model: str  # a local model's name, or <provider>/<model id>
    messages: list[Message]
    sampling: Sampling
    private: bool = False  # stored nowhere on the node (the chat's private conversations)
    overflow: Overflow = Overflow.REFUSE
    price_shown_msat: int | None = None  # what the member saw: a higher price is refused
    # The chat's conversation, which a spread route keeps with one model; None (the API): each
    # request counts as a new conversation.
    conversation_key: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The conversation's placeholders for its private values (apps/privacy/vault.py), so the
    # same value goes out as the same placeholder every turn; None: a new vault per request.
    vault: Vault | None = None
    # The digest of what the member was shown would leave (`preview`): an outside model to which
    # something else would go is refused, and a route passes it over.
    leaving_shown: str | None = None
    # On whose behalf a payment is made besides the provider's own caller: an agent task
    # (`agent:<id>`), whose cap every payment of its steps counts against as well.
    payer: str = ""


@dataclass(frozen=True)
class Route:
    backend: ChatBackend
    backend_request: BackendRequest
    provenance: dict[str, Any]
    outside: bool
    trusted: bool = False  # an outside provider the owner trusts: nothing redacted
    provider: str = ""  # an outside one's name


# A model that fails in one of these ways before its first token is passed over for the route's
# next. OVER_BUDGET too: the next may be free, and every model is checked against the budgets
# again before anything is paid. Not PAYMENT_PENDING: nothing more is spent while a payment's
# outcome is unknown. Nor a request the member must change.
FALLS_BACK = frozenset(
    {
        RefusalCode.PROVIDER_FAILED,
        RefusalCode.PROVIDER_TIMEOUT,
        RefusalCode.INVOICE_REFUSED,
        RefusalCode.OVER_BUDGET,
        RefusalCode.WALLET_UNAVAILABLE,  # the next model may be free
        RefusalCode.ENGINE_STOPPED,  # a local model of the route, down or busy
        RefusalCode.ENGINE_BROKEN,
        RefusalCode.MODEL_UNAVAILABLE,
        RefusalCode.OVERLOADED,
        RefusalCode.PREVIEW_CHANGED,  # the next may send what the member saw
    }
)


async def answer(request: AnswerRequest) -> Events:
    """The answer's events, once its backend has taken the request. A friend's request is
    counted against their quota before anything else, and its tokens once it ends."""
    friend = request.member.role == Role.FRIEND
    if friend and request.origin != Origin.NODE:  # the node's asides are not the friend's asking
        await sync_to_async(sharing.quota_take)(request.member, request.model)
    name = routing.route_name(request.model)
    if name is not None and request.origin != Origin.SALE:  # strangers buy local models only
        events = await _along_route(request, name)
    else:
        events = await _answer_model(request)
    if friend:
        return await primed(_counted(events, request.member))
    return events


async def _answer_model(request: AnswerRequest) -> Events:
    prepared = await sync_to_async(_route_prepared)(request)
    if isinstance(prepared, NamesPass):
        names = await model_pass.names_found(_texts(request), prepared.model, request.member)
        prepared = await sync_to_async(_route_prepared_with)(request, names)
    route, leaving = prepared
    events = await route.backend.open(route.backend_request)
    if leaving is not None:
        events = await leaving.restored(events)
    return await primed(_ended(events, route.provenance))


Prepared = tuple[Route, redaction.Leaving | None]


@dataclass(frozen=True)
class NamesPass:
    """An outside request the owner wants a local model to read first, for names and places
    the patterns miss (apps/privacy/model_pass.py): nothing is prepared to leave yet."""

    model: str


def _route_prepared(request: AnswerRequest) -> Prepared | NamesPass:
    """The route, and for an outside one what leaves (through the privacy hook) made ready to
    send, in one trip to the database thread: each trip adds to the first token's wait. Only
    with the local model's pass on is there a second trip, once it has read the request."""
    route = route_of(request)
    if not route.outside:
        return route, None
    policy = None if route.trusted else policy_now()
    if policy is not None and policy.model_pass is not None:
        return NamesPass(policy.model_pass)
    return _prepared(request, route, policy, frozenset())


def _route_prepared_with(request: AnswerRequest, names: frozenset[str]) -> Prepared:
    """As `_route_prepared`, the local model's names and places taken out too."""
    route = route_of(request)
    if not route.outside:
        return route, None
    return _prepared(request, route, None if route.trusted else policy_now(), names)


def _prepared(
    request: AnswerRequest, route: Route, policy: Policy | None, names: frozenset[str]
) -> Prepared:
    leaving = _leaving(request, route, request.vault, policy, names)
    _check_shown(request, route, leaving)
    options = {"found": leaving.found, "redacted": leaving.redacted}
    sent = replace(
        route.backend_request,
        messages=leaving.messages,
        sampling={
            **route.backend_request.sampling,
            "stop": leaving.stop,
            "response_format": leaving.response_format,
        },
        options={**route.backend_request.options, **options},
    )
    # The answer's provenance says what was kept at home: kinds and counts, never a value.
    shown = {**route.provenance, "redacted": leaving.found if leaving.redacted else None}
    return replace(route, backend_request=route.backend.prepare(sent), provenance=shown), leaving


def _check_shown(request: AnswerRequest, route: Route, leaving: redaction.Leaving) -> None:
    """A request the member saw before it was sent leaves only as it was shown: the owner may
    have trusted a provider or changed the words since, or a route may fall back to a model
    that sends it otherwise."""
    if request.leaving_shown is None or leaving.digest == request.leaving_shown:
        return
    raise AnswerRefused(
        RefusalCode.PREVIEW_CHANGED,
        f"What would go to {route.provider} is not what the preview showed; nothing was sent. "
        "Send it again to see what would leave now.",
    )


def _leaving(
    request: AnswerRequest,
    route: Route,
    vault: Vault | None,
    policy: Policy | None,
    names: frozenset[str],
) -> redaction.Leaving:
    return redaction.outbound(
        request.messages,
        trusted=route.trusted,
        vault=vault,
        policy=policy,
        stop=request.sampling.stop,  # the member's text as much as the messages
        response_format=request.sampling.response_format,  # a schema's descriptions too
        extra_terms=names,
    )


def _texts(request: AnswerRequest) -> list[str]:
    """What the local model's pass reads: everything of the request that would leave."""
    texts = [message["content"] for message in request.messages] + list(request.sampling.stop)
    return texts + redaction.strings_of(request.sampling.response_format)


@dataclass(frozen=True)
class Preview:
    """What a request would send outside, shown before it is sent (the chat's preview)."""

    outside: bool
    provider: str
    trusted: bool
    messages: list[Message]  # exactly what would leave
    found: dict[str, int]  # kind → count, never a value
    digest: str  # sent back with the request: it leaves only as shown ("" when nothing leaves)


def preview(request: AnswerRequest) -> Preview:
    """What `answer(request)` would send outside, computed the same way, sending and recording
    nothing (the conversation's vault is copied, not changed); for a route, what its first
    outside model would be sent, should the models before it fail. Raises AnswerRefused as
    `answer` would before anything leaves: a hard stop, an unknown model, a price too high."""
    for model in _models_of(request):
        route = route_of(replace(request, model=model))
        if route.outside:
            return _preview_of(request, route)
    return Preview(False, "", False, request.messages, {}, "")


def _preview_of(request: AnswerRequest, route: Route) -> Preview:
    vault = Vault.from_state(request.vault.state()) if request.vault is not None else None
    policy = None if route.trusted else policy_now()
    names: frozenset[str] = frozenset()
    if policy is not None and policy.model_pass is not None:
        # What the preview shows is what leaves: the local model reads it first here too.
        names = async_to_sync(model_pass.names_found)(
            _texts(request), policy.model_pass, request.member
        )
    leaving = _leaving(request, route, vault, policy, names)
    sent, found, digest = leaving.messages, leaving.found, leaving.digest
    return Preview(True, route.provider, route.trusted, sent, found, digest)


def _models_of(request: AnswerRequest) -> list[str]:
    name = routing.route_name(request.model)
    return [request.model] if name is None else _plan(request, name).models


async def _along_route(request: AnswerRequest, name: str) -> Events:
    """The first answer along the route's models. Every attempt keeps the request's id: the
    wallet pays once per provider and request, so a provider paid before it failed is never
    paid again for this question, even if the route names it twice."""
    plan = await sync_to_async(_plan)(request, name)
    failed: list[tuple[str, AnswerRefused]] = []
    for model in plan.models:
        try:
            events = await _answer_model(replace(request, model=model))
        except AnswerRefused as refusal:
            if refusal.code not in FALLS_BACK:
                raise
            failed.append((model, refusal))
            continue
        try:
            await sync_to_async(routing.choice_record)(
                plan, request.member, request.conversation_key, model
            )
        except BaseException:
            await events.aclose()
            raise
        passed = [failure[0] for failure in failed]
        shown = {"route": plan.name, "policy": plan.policy, "fell_back_from": passed}
        return await primed(_routed(events, shown))
    reasons = " ".join(f"{model}: {refusal}" for model, refusal in failed)
    raise AnswerRefused(failed[-1][1].code, f"No model of {plan.name} answered. {reasons}")


def _plan(request: AnswerRequest, name: str) -> routing.Plan:
    try:
        return routing.plan_for(
            request.member, name, request.conversation_key, outside=may_go_outside(request.member)
        )
    except routing.RouteError:
        raise AnswerRefused(
            RefusalCode.MODEL_NOT_FOUND, f"The model '{request.model}' does not exist."
        ) from None


async def _routed(events: Events, shown: dict[str, Any]) -> Events:
    """The answer, its end naming the route and the models passed over before it."""
    try:
        yield PRIMING
        async for event in events:
            if isinstance(event, Done):
                event = replace(event, provenance={**event.provenance, **shown})
            yield event
    finally:
        await events.aclose()


async def _counted(events: Events, member: Member) -> Events:
    """A friend's answer; at its end, the tokens it used count against their quota (once, even
    if the client leaves: then the tokens it had been sent)."""
    sent, counted = 0, False
    try:
        yield PRIMING
        async for event in events:
            if isinstance(event, Token):
                sent += 1 if event.text else 0
            elif isinstance(event, Done):
                used = event.usage.prompt_tokens + event.usage.completion_tokens
                counted = True
                await sync_to_async(sharing.tokens_count)(member, used)
            yield event
    finally:
        if not counted and sent:
            await sync_to_async(sharing.tokens_count)(member, sent)
        await events.aclose()


def answer_sync(request: AnswerRequest) -> tuple[str, Done | Failed]:
    """The whole answer, for a Celery task or a shell (never on an event loop)."""

    async def whole() -> tuple[str, Done | Failed]:
        try:
            events = await answer(request)
            return await answer_collected(events)
        except AnswerRefused as refusal:
            return "", Failed(refusal.code, str(refusal))
        finally:
            await calling.client_close()

    return async_to_sync(whole)()


@dataclass(frozen=True)
class ModelChoice:
    """A model a member may ask, as the chat's picker and /v1/models list it."""

    name: str
    added_at: Any  # datetime
    owned_by: str  # "sovereign", or the provider's name
    price_msat: int  # the most one answer of `max_tokens` may cost; 0 on the node

    @property
    def outside(self) -> bool:
        return self.owned_by != "sovereign"


def choices_for(member: Member, max_tokens: int) -> list[ModelChoice]:
    """The local models, then the outside ones this member may use, with their prices, then
    the routes (owned by "route"), each at the highest price among the models it may use."""
    shared = sharing.shared_with(member) if member.role == Role.FRIEND else None
    choices = [
        ModelChoice(model.name, model.added_at, "sovereign", 0)
        for model in LocalModel.objects.order_by("name")
        if shared is None or model.name in shared
    ]
    for offer in providers.outside_models():
        if may_go_outside(member, offer.name):
            price = offer.price_msat(max_tokens)
            choices.append(
                ModelChoice(offer.name, offer.provider.added_at, offer.provider.name, price)
            )
    if shared is not None:
        return choices  # a friend is shared models, never the household's routes
    for route in routing.routes_list():
        models = routing.usable_models(route, outside=may_go_outside(member))
        if models:
            price = routing.route_price_msat(models, max_tokens)
            name = f"{routing.PREFIX}/{route.name}"
            choices.append(ModelChoice(name, route.created_at, routing.PREFIX, price))
    return choices


def route_of(request: AnswerRequest) -> Route:
    """Local models' names are slugs; outside ones are `<provider>/<model id>`; for a route
    (`route/<name>`), where the request goes first."""
    name = routing.route_name(request.model)
    if name is not None and request.origin != Origin.SALE:
        return route_of(replace(request, model=_plan(request, name).models[0]))
    if request.member.role == Role.FRIEND and request.origin != Origin.SALE:
        _check_shared(request)
    if "/" not in request.model:
        local = LocalModel.objects.filter(name=request.model).order_by().first()
        if local is not None:
            return _local(request, local)
    elif may_go_outside(request.member, request.model) and request.origin != Origin.SALE:
        outside = providers.route_for(request.model)
        if outside is not None:
            return _outside(request, outside)
    message = f"The model '{request.model}' does not exist."
    raise AnswerRefused(RefusalCode.MODEL_NOT_FOUND, message)


def may_go_outside(member: Member, model: str | None = None) -> bool:
    """Whether the member may ask outside models (`model` None), or this one. Friends use only
    what the owner shares with them: an outside model shared by name, never any other, nor a
    route."""
    if member.role in (Role.OWNER, Role.MEMBER):
        return True
    if member.role != Role.FRIEND or model is None or "/" not in model:
        return False
    return model in sharing.shared_with(member)


def _check_shared(request: AnswerRequest) -> None:
    """A friend's request reaches only a model shared with them, whoever asks for it (a
    preview, the node's own aside on their conversation)."""
    if request.model not in sharing.shared_with(request.member):
        message = f"The model '{request.model}' is not shared with you."
        raise AnswerRefused(RefusalCode.MODEL_NOT_SHARED, message)


def _local(request: AnswerRequest, model: LocalModel) -> Route:
    # Strangers are one user to the engine, held to their own lane (engine.STRANGERS).
    user = STRANGERS if request.origin == Origin.SALE else str(request.member.pk)
    backend_request = BackendRequest(
        str(model.path),
        request.messages,
        request.sampling.for_engine(),
        user,
        options={"overflow": request.overflow, "cache_group": _cache_group(request)},
    )
    return Route(LocalEngine(), backend_request, provenance(model, request.sampling), outside=False)


def _cache_group(request: AnswerRequest) -> str:
    """Whose cached prompts a request may reuse in the engine: the household shares its cache
    (a common system prompt is decoded once); a friend reuses only their own; a stranger only
    what the same buyer (their balance) asked before, so the cached-token count (and the speed)
    tells no one what another asked."""
    if request.origin == Origin.SALE:
        return f"sale:{request.conversation_key or request.request_id}"
    if request.member.role == Role.FRIEND:
        return f"member:{request.member.pk}"
    return "household"


def _outside(request: AnswerRequest, route: providers.OutsideRoute) -> Route:
    sampling = request.sampling  # a JSON format is sent to the provider; a bare grammar is not
    if sampling.grammar is not None and sampling.response_format is None:
        raise AnswerRefused(RefusalCode.BAD_REQUEST, "A grammar is only kept by local models.")
    price = route.price_msat(request.sampling.max_tokens)
    _check_price(request, price, caller=f"provider:{route.provider.name}")
    options = {
        "request_id": request.request_id,
        "payer": request.payer,
        "price_msat": price,
        "origin": str(request.origin),
        "member_id": request.member.pk,
    }
    backend_request = BackendRequest(
        route.model_id, request.messages, asdict(request.sampling), str(request.member.pk), options
    )
    shown = {"model": route.name, "price_msat": price, "sampling": request.sampling.shown()}
    backend = OutsideBackend(route.provider)
    provider = route.provider
    return Route(backend, backend_request, shown, True, provider.trusted, provider.name)


def _check_price(request: AnswerRequest, price: int, *, caller: str) -> None:
    """Before a byte leaves: the price the member saw still holds, and their allowance (and
    every other budget) has room for it."""
    shown = request.price_shown_msat
    if shown is not None and price > shown:
        raise AnswerRefused(
            RefusalCode.INVOICE_REFUSED,
            f"The price went up from {_sat(shown)} to {_sat(price)}; nothing was sent or paid. "
            "Ask again to accept the new price.",
        )
    left = wallet.spendable_msat(request.member, caller, request.payer)
    need = price + wallet.fee_limit_msat(price) if price > 0 else 0
    if price > 0 and left is not None and left < need:
        raise AnswerRefused(
            RefusalCode.OVER_BUDGET,
            f"This model costs up to {_sat(price)} a question and {_sat(max(left, 0))} is left "
            "in your allowance and the household's budgets; nothing was sent or paid.",
        )


def _sat(msat: int) -> str:
    sats = msat / 1000
    return f"{sats:g} sat"


async def _ended(events: Events, shown: dict[str, Any]) -> Events:
    """Exactly one end, carrying the provenance; a backend that stops without one failed."""
    try:
        yield PRIMING
        async for event in events:
            if isinstance(event, Token):
                yield event
                continue
            if isinstance(event, Done):
                event = replace(event, provenance={**shown, **event.provenance})
            yield event
            return
        yield Failed(RefusalCode.ENGINE_STOPPED, "The answer ended early.")
    finally:
        await events.aclose()
