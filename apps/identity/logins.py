"""Proving a key to log in: a signed challenge (extension or remote signer) or a DM code."""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from apps.audit.services import audit_record
from apps.identity import nip98
from apps.identity.addresses import NotPublic, public_addresses
from apps.identity.backends import relays
from apps.identity.backends.base import BunkerUriInvalid, RelayError, RemoteSignerSession
from apps.identity.models import AuditAction, LoginChallenge, LoginCode, Member
from apps.identity.nip98 import AuthRefused
from apps.identity.services import (
    ATTEMPT_WINDOW,
    LOGIN_ATTEMPTS_PER_WINDOW,
    IdentityError,
    attempt_allowed,
    attempt_record,
    attempts_exceeded,
    event_remember,
    invite_accept,
    is_claimed,
    login_urls,
    node_claim,
    node_keys,
    profile_refresh_soon,
)

logger = logging.getLogger(__name__)

CHALLENGE_LIFETIME = timedelta(minutes=5)
CODE_LIFETIME = timedelta(minutes=5)
CODE_ATTEMPTS = 5
CODES_PER_WINDOW = 3
CODE_SEND_WINDOW = timedelta(minutes=15)
CODE_FAILURES_PER_DAY = 10
BUNKER_TIMEOUT = 30


def challenge_issue() -> str:
    value = secrets.token_urlsafe(32)
    LoginChallenge.objects.filter(expires_at__lt=timezone.now()).delete()
    LoginChallenge.objects.create(value=value, expires_at=timezone.now() + CHALLENGE_LIFETIME)
    return value


@dataclass(frozen=True)
class LoginContext:
    """What a login request brings besides its proof of key."""

    client: str  # the address it came from, for rate limits
    may_claim: bool = False  # the setup secret was given in this session
    invite_token: str = ""


def login_verify(
    event_json: str, *, urls: set[str], context: LoginContext, how: str, now: int | None = None
) -> Member:
    """The member a signed login event proves; refuses it with a message otherwise.

    `now` is when the event reached the node, if it came before this check did.
    """

    def prove() -> str:
        checked_at = now if now is not None else int(time.time())
        signed = nip98.verify(event_json, urls=urls, method="POST", body=b"", now=checked_at)
        challenge_consume(signed.challenge)
        event_remember(signed.event_id, signed.created_at)
        return signed.pubkey

    return _log_in(prove, context, how)


def login_refuse(refusal: AuthRefused, context: LoginContext, how: str) -> AuthRefused:
    """Count and audit a refusal that came before any proof could be checked."""
    attempt_record(f"login-failed:{context.client}")
    audit_record(AuditAction.LOGIN_FAILED, detail=f"{how}: {refusal}")
    return refusal


def _log_in(prove: Callable[[], str], context: LoginContext, how: str) -> Member:
    """Run a proof of key and log its member in; failures are counted, and all audited."""
    if attempts_exceeded(
        f"login-failed:{context.client}", LOGIN_ATTEMPTS_PER_WINDOW, ATTEMPT_WINDOW
    ):
        raise login_refuse(
            AuthRefused("Too many failed logins from here; wait a few minutes."), context, how
        )
    try:
        with transaction.atomic():
            pubkey = prove()
            member = _login_member(pubkey, context.may_claim, context.invite_token)
            audit_record(AuditAction.LOGIN, actor=member.pubkey, detail=how)
            profile_refresh_soon(member)
    except AuthRefused as refusal:
        raise login_refuse(refusal, context, how) from None
    return member


def challenge_consume(value: str | None) -> None:
    if not value:
        raise AuthRefused("The event has no 'challenge' tag.")
    used = LoginChallenge.objects.filter(
        value=value, used_at=None, expires_at__gt=timezone.now()
    ).update(used_at=timezone.now())
    if not used:
        raise AuthRefused("The challenge is used, expired or unknown; try again.")


def _login_member(pubkey: str, may_claim: bool, invite_token: str) -> Member:
    if may_claim and not is_claimed():
        return node_claim(pubkey)
    member = Member.objects.filter(pubkey=pubkey, is_active=True).first()
    if member is not None:
        return member  # already here: an invite in hand stays unused for someone else
    if invite_token:
        return invite_accept(invite_token, pubkey)
    raise AuthRefused("This key is not a member of this node; ask the owner for an invite.")


# From a phone: a code by Nostr DM, or a remote signer (NIP-46)


# Codes go out on threads of their own, after the answer: a relay's delay or outage must not
# show in the answer or its timing, or it would tell a stranger who is a member.
_code_sender = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="code-dm")


def code_send(pubkey: str, client: str) -> None:
    """DM a one-time login code to a member's key (NIP-17), from the node's own key.

    A member and a stranger get the same answer at the same speed: the DM leaves later.
    """
    if not (
        attempt_allowed(f"code-send:{pubkey}", CODES_PER_WINDOW, CODE_SEND_WINDOW)
        and attempt_allowed(f"code-send:{client}", 3 * CODES_PER_WINDOW, CODE_SEND_WINDOW)
    ):
        raise IdentityError("Too many codes asked for; wait a quarter of an hour.")
    code = _code_issue(pubkey)
    if code is not None:
        _code_sender.submit(_code_deliver, pubkey, code)


def _code_issue(pubkey: str) -> str | None:
    """A new code for a member, replacing any waiting one; None for anyone else."""
    if not Member.objects.filter(pubkey=pubkey, is_active=True).exists():
        return None
    code = f"{secrets.randbelow(10**6):06d}"
    with transaction.atomic():
        LoginCode.objects.filter(pubkey=pubkey, used_at=None).update(used_at=timezone.now())
        LoginCode.objects.create(
            pubkey=pubkey,
            code_hash=_code_digest(pubkey, code),
            expires_at=timezone.now() + CODE_LIFETIME,
        )
        audit_record(AuditAction.CODE_SENT, subject=pubkey)
    return code


def _code_deliver(pubkey: str, code: str) -> None:
    text = (
        f"Your Sovereign login code is {code}. It works once, for 5 minutes. "
        "If you did not ask for it, ignore this message."
    )
    try:
        secret = str(node_keys().secret_key().to_hex())
        relays.send_private_message(secret, pubkey, text, settings.NOSTR_RELAYS)
    except (RelayError, ValueError, RuntimeError) as error:
        # The code stays unusable to anyone without the DM and expires in minutes.
        logger.warning("A login code could not be sent by DM: %s", error)


def code_verify(pubkey: str, code: str, context: LoginContext) -> Member:
    waiting = LoginCode.objects.filter(
        pubkey=pubkey, used_at=None, expires_at__gt=timezone.now()
    ).first()
    # Each try is counted before it is checked, outside the login's transaction, so a
    # wrong guess stays counted and parallel guesses can't get past the limits: 5 per
    # code, and CODE_FAILURES_PER_DAY per key whatever the number of codes asked for.
    counted = waiting is not None and bool(
        LoginCode.objects.filter(pk=waiting.pk, attempts__lt=CODE_ATTEMPTS).update(
            attempts=F("attempts") + 1
        )
    )
    failures = f"code-failed:{pubkey}"
    correct = (
        waiting is not None
        and counted
        and not attempts_exceeded(failures, CODE_FAILURES_PER_DAY, timedelta(days=1))
        and hmac.compare_digest(waiting.code_hash, _code_digest(pubkey, code.strip()))
    )
    if waiting is not None and not correct:
        attempt_record(failures)

    def prove() -> str:
        used = (
            correct
            and waiting is not None
            and LoginCode.objects.filter(pk=waiting.pk, used_at=None).update(used_at=timezone.now())
        )
        if not used:
            # One answer for every refusal, so it tells nobody whether a code was waiting.
            raise AuthRefused("That code is wrong or no longer valid; ask for a new one.")
        return pubkey

    return _log_in(prove, context, "code by Nostr DM")


def _code_digest(pubkey: str, code: str) -> str:
    # Keyed: a leaked database does not give up codes to a quick brute force.
    message = f"{pubkey}:{code}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


def _remote_login_tags() -> list[list[str]]:
    url = sorted(login_urls(reverse("identity:verify")))[0]
    return [["u", url], ["method", "POST"], ["challenge", challenge_issue()]]


def remote_login_start() -> RemoteSignerSession:
    """A `nostrconnect://` address to scan; the signer signs a login challenge for it."""
    try:
        return relays.remote_signer_start(settings.NOSTR_RELAYS, _remote_login_tags())
    except (RelayError, ValueError) as error:  # TooManySessions is a RelayError
        raise IdentityError(str(error)) from None


def remote_login_cancel(session_id: str) -> None:
    relays.remote_signer_cancel(session_id)


def remote_login_finish(session_id: str, context: LoginContext) -> Member | None:
    """The member once their signer has signed; None while it has not yet."""
    state, detail = relays.remote_signer_status(session_id)
    if state == "pending":
        return None
    if state == "failed" or detail is None:
        raise login_refuse(
            AuthRefused(detail or "The signer did not sign."), context, "remote signer"
        )
    urls = login_urls(reverse("identity:verify"))
    arrived = relays.remote_signer_signed_at(session_id)
    return login_verify(detail, urls=urls, context=context, how="remote signer", now=arrived)


def bunker_login(bunker_uri: str, context: LoginContext) -> Member:
    """Log in through a pasted `bunker://` address: the signer signs a login challenge."""
    how = "bunker"
    if attempts_exceeded(
        f"login-failed:{context.client}", LOGIN_ATTEMPTS_PER_WINDOW, ATTEMPT_WINDOW
    ):
        raise login_refuse(
            AuthRefused("Too many failed logins from here; wait a few minutes."), context, how
        )
    try:
        _check_bunker_relays(bunker_uri)
        # Outside any transaction: waiting for a phone must not hold the database.
        event_json = relays.bunker_sign(
            bunker_uri,
            _remote_login_tags(),
            timeout=BUNKER_TIMEOUT,
            trusted_relays=settings.NOSTR_RELAYS,
        )
    except (AuthRefused, BunkerUriInvalid, RelayError) as error:
        raise login_refuse(AuthRefused(str(error)), context, how) from None
    urls = login_urls(reverse("identity:verify"))
    return login_verify(event_json, urls=urls, context=context, how=how)


def _check_bunker_relays(bunker_uri: str) -> None:
    """Anyone may paste an address before logging in, so the node dials out only to its
    own relays, or to TLS relays on public hosts: never to a stranger's internal address."""
    try:
        named = parse_qs(urlsplit(bunker_uri.strip()).query).get("relay", [])
    except ValueError:
        raise AuthRefused("That is not a bunker:// address.") from None
    for relay in named:
        if relay not in settings.NOSTR_RELAYS and not _public_tls_relay(relay):
            raise AuthRefused("A bunker:// address must name wss:// relays on public hosts.")


def _public_tls_relay(relay: str) -> bool:
    """A wss:// relay whose host resolves to public addresses only: a clear refusal at once.

    The connection itself goes through the pinning proxy, which checks again what the name
    answers at that moment and connects to just that (backends/pinning_proxy.py).
    """
    try:
        parts = urlsplit(relay)
        host, port = parts.hostname or "", parts.port or 443
    except ValueError:
        return False
    if parts.scheme != "wss":
        return False
    try:
        public_addresses(host, port)
    except NotPublic:
        return False
    return True
