"""Identity workflows: claiming the node, logging in with a key, members, invites, API keys."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from nostr_sdk import Keys, PublicKey

from apps.audit.services import audit_record
from apps.identity import nip98, pictures
from apps.identity.backends import relays
from apps.identity.backends.base import RelayError
from apps.identity.models import (
    ApiKey,
    Attempt,
    AuditAction,
    Invite,
    Member,
    Role,
    SeenEvent,
)
from apps.identity.nip98 import AuthRefused
from sovereign.environment import secret_file
from sovereign.live_events import publish_after_commit

logger = logging.getLogger(__name__)

LOGIN_ATTEMPTS_PER_WINDOW = 10
ATTEMPT_WINDOW = timedelta(minutes=5)
API_KEY_PREFIX = "sov_"


class IdentityError(Exception):
    """Bad input or a refused change; the message is for the person who asked."""


# Keys and names


def parse_pubkey(text: str) -> str:
    """The hex public key of an npub or a 64-character hex key; anything else is refused.

    Refusals never repeat the input: it may be a secret key pasted by mistake.
    """
    value = text.strip().removeprefix("nostr:")
    if "nsec1" in text.lower():
        raise IdentityError("That is a secret key (nsec): never share it. Give the npub instead.")
    is_hex = len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)
    if not (value.startswith("npub1") or is_hex):
        raise IdentityError("That is not an npub or a 64-character hex public key.")
    try:
        return str(PublicKey.parse(value).to_hex())
    except Exception:  # nostr-sdk's own error for a bad checksum or a point off the curve
        raise IdentityError("That npub or hex key is not a valid Nostr public key.") from None


@functools.cache
def _node_keys(path: Path) -> Keys:
    return Keys.parse(secret_file(path, lambda: str(Keys.generate().secret_key().to_hex())))


def node_keys() -> Keys:
    """The node's own Nostr key, made on first use and kept owner-only in the data directory."""
    return _node_keys(settings.DATA_DIR / "node_key")


def node_npub() -> str:
    return str(node_keys().public_key().to_bech32())


# Rate limits

# Attempts are kept this long, longer than any window they are counted in.
ATTEMPT_RETENTION = timedelta(days=1)


def attempts_exceeded(key: str, limit: int, window: timedelta) -> bool:
    since = timezone.now() - window
    return Attempt.objects.filter(key=key, at__gte=since).count() >= limit


def attempt_record(key: str) -> None:
    Attempt.objects.filter(at__lt=timezone.now() - ATTEMPT_RETENTION).delete()
    Attempt.objects.create(key=key)


def attempt_allowed(key: str, limit: int, window: timedelta) -> bool:
    """Count an attempt under key; False (and nothing counted) once the limit is reached."""
    with transaction.atomic():
        if attempts_exceeded(key, limit, window):
            return False
        attempt_record(key)
    return True


# Claiming the node


def is_claimed() -> bool:
    return Member.objects.filter(role=Role.OWNER).exists()


def setup_secret() -> str:
    """The one secret that lets the first visitor claim the node (printed by `make run`)."""
    configured: str = settings.SETUP_SECRET
    return configured or secret_file(
        settings.DATA_DIR / "setup_secret", lambda: secrets.token_urlsafe(12)
    )


def setup_secret_matches(given: str) -> bool:
    if is_claimed():
        return False
    return hmac.compare_digest(given.strip().encode(), setup_secret().encode())


def node_owner() -> Member | None:
    return Member.objects.filter(role=Role.OWNER).first()


def node_claim(pubkey: str, actor: str = "") -> Member:
    with transaction.atomic():
        if is_claimed():
            raise IdentityError("This node already has an owner.")
        owner, _ = Member.objects.get_or_create(pubkey=pubkey, defaults={"role": Role.OWNER})
        Member.objects.filter(pk=owner.pk).update(role=Role.OWNER)
        owner.refresh_from_db()
        audit_record(AuditAction.NODE_CLAIMED, actor=actor or pubkey, subject=pubkey)
    # The secret has done its one job.
    (settings.DATA_DIR / "setup_secret").unlink(missing_ok=True)
    return owner


# Members


def member_add(pubkey: str, role: str, actor: str = "") -> Member:
    if role not in (Role.MEMBER, Role.FRIEND):
        raise IdentityError("A new person is a member or a friend; the owner claims the node.")
    try:
        with transaction.atomic():
            member = Member.objects.create_user(pubkey=pubkey, role=role)
            audit_record(AuditAction.MEMBER_ADDED, actor=actor, subject=pubkey, detail=role)
            profile_refresh_soon(member)
    except IntegrityError:
        raise IdentityError("That key is already a member of this node.") from None
    return member


def member_remove(pubkey: str, actor: str = "") -> None:
    """Remove at once: their sessions end (they point at no one) and their keys go with them."""
    with transaction.atomic():
        member = _member(pubkey)
        if member.is_owner:
            raise IdentityError("The owner can't be removed.")
        member_sockets_close(member.pk)
        member.delete()
        audit_record(AuditAction.MEMBER_REMOVED, actor=actor, subject=pubkey)
    pictures.picture_forget(pubkey)


def member_set_role(pubkey: str, role: str, actor: str = "") -> Member:
    if role not in (Role.MEMBER, Role.FRIEND):
        raise IdentityError("The role must be member or friend.")
    with transaction.atomic():
        member = _member(pubkey)
        if member.is_owner:
            raise IdentityError("The owner's role can't be changed.")
        Member.objects.filter(pk=member.pk).update(role=role)
        member_sockets_close(member.pk)
        audit_record(
            AuditAction.ROLE_CHANGED, actor=actor, subject=pubkey, detail=f"{member.role} → {role}"
        )
    member.refresh_from_db()
    return member


def member_by_id(member_id: int) -> Member | None:
    return Member.objects.filter(pk=member_id).first()


def member_group(member_id: int) -> str:
    """The channel-layer group of one member's open live pages."""
    return f"member-{member_id}"


def member_sockets_close(member_id: int) -> None:
    """Close a member's open live pages after commit; they reconnect as who they now are."""
    publish_after_commit(member_group(member_id), {"type": "session.end"})


def _member(pubkey: str) -> Member:
    try:
        return Member.objects.get(pubkey=pubkey)
    except Member.DoesNotExist:
        raise IdentityError("That key is not a member of this node.") from None


# Invites


def invite_create(role: str, actor: Member, days: int = 7) -> tuple[Invite, str]:
    if role not in (Role.MEMBER, Role.FRIEND):
        raise IdentityError("An invite makes a member or a friend.")
    token = secrets.token_urlsafe(24)
    with transaction.atomic():
        invite = Invite.objects.create(
            token_hash=_digest(token),
            role=role,
            created_by=actor,
            expires_at=timezone.now() + timedelta(days=days),
        )
        audit_record(
            AuditAction.INVITE_CREATED,
            actor=actor.pubkey,
            subject=f"invite {invite.pk}",
            detail=role,
        )
    return invite, token


def invites_open() -> list[Invite]:
    return list(Invite.objects.filter(used_at=None, expires_at__gt=timezone.now()))


def invite_cancel(invite_id: int, actor: Member) -> None:
    with transaction.atomic():
        # Marked used by no one: the link stops working, and the row stays for the record.
        cancelled = Invite.objects.filter(id=invite_id, used_at=None).update(used_at=timezone.now())
        if not cancelled:
            raise IdentityError("No such open invite.")
        audit_record(
            AuditAction.INVITE_CANCELLED, actor=actor.pubkey, subject=f"invite {invite_id}"
        )


def invite_accept(token: str, pubkey: str) -> Member:
    now = timezone.now()
    invites = Invite.objects.filter(token_hash=_digest(token), used_at=None, expires_at__gt=now)
    invite = invites.first()
    # The conditional update makes the link single-use even when two people race for it.
    if invite is None or not invites.filter(pk=invite.pk).update(used_at=now, used_by=pubkey):
        raise AuthRefused("This invite link is used, expired or unknown.")
    member, created = Member.objects.get_or_create(pubkey=pubkey, defaults={"role": invite.role})
    if created:
        member.set_unusable_password()
        member.save(update_fields=["password"])
    audit_record(
        AuditAction.INVITE_USED, actor=pubkey, subject=f"invite {invite.pk}", detail=invite.role
    )
    return member


def login_urls(path: str) -> set[str]:
    """Where a login may be addressed: the path on each of the node's trusted origins."""
    return {f"{origin}{path}" for origin in settings.CSRF_TRUSTED_ORIGINS}


# Profiles (kind-0 metadata), fetched in the background so no login waits on a relay


PROFILE_MAX_AGE = timedelta(days=1)


def profile_refresh_soon(member: Member) -> None:
    """Queue a profile fetch after this transaction commits, unless it is fresh enough."""
    fetched = member.profile_fetched_at
    if fetched is not None and timezone.now() - fetched < PROFILE_MAX_AGE:
        return
    from apps.identity.tasks import profile_refresh

    transaction.on_commit(lambda: _enqueue(profile_refresh, member.pk))


def _enqueue(task: Any, *args: Any) -> None:
    try:
        task.delay(*args)
    except Exception:
        # A broker outage must not fail the login that asked for it.
        logger.warning("Could not queue %s", task.name, exc_info=True)


def profile_refresh(member_id: int) -> None:
    """Fetch a member's name and picture; an outage leaves them due for the next login."""
    member = Member.objects.filter(pk=member_id).first()
    if member is None:
        return
    try:
        profile = relays.fetch_profile(member.pubkey, settings.NOSTR_RELAYS)
    except RelayError as error:
        logger.info("A profile was not fetched: %s", error)
        return  # not marked as fetched, so it is not taken as "no profile" for a day
    fields: dict[str, Any] = {"profile_fetched_at": timezone.now()}
    if profile is not None:
        names = [name for name in profile.names if _name_of_its_own(name)]
        fields |= {
            # A `name` that looks like a key gives way to the display name after it.
            "name": names[0] if names else "",
            "picture": profile.picture or "",
            "profile_names": names,
        }
    Member.objects.filter(pk=member_id).update(**fields)
    if profile is not None:
        _picture_refresh(member.pubkey, profile.picture)


def _name_of_its_own(name: str | None) -> str:
    """A profile name, unless it looks like a key: nobody may pass for someone else's npub."""
    if not name or name.lower().removeprefix("nostr:").startswith(("npub1", "npub…")):
        return ""
    return name


def _picture_refresh(pubkey: str, url: str | None) -> None:
    if not url:
        pictures.picture_forget(pubkey)
        return
    try:
        pictures.picture_store(pubkey, url)
    except pictures.PictureRefused as refusal:
        logger.info("A profile picture was not kept: %s", refusal)


def event_remember(event_id: str, created_at: int) -> None:
    SeenEvent.objects.filter(expires_at__lt=timezone.now()).delete()
    expires = datetime.fromtimestamp(created_at + 2 * nip98.MAX_AGE_SECONDS, tz=UTC)
    try:
        with transaction.atomic():
            SeenEvent.objects.create(event_id=event_id, expires_at=expires)
    except IntegrityError:
        raise AuthRefused("This signed event was already used.") from None


# API keys and signed API requests


def apikey_create(member: Member, name: str, actor: str | None = None) -> tuple[ApiKey, str]:
    """A new key, returned once in full; only its hash is kept. actor "shell": a command."""
    name = name.strip()
    if not name or len(name) > 100:
        raise IdentityError("Give the key a name of 1 to 100 characters.")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            member=member, name=name, prefix=key[:10], key_hash=_digest(key)
        )
        audit_record(
            AuditAction.APIKEY_CREATED,
            actor=member.pubkey if actor is None else actor,
            subject=name,
        )
    return api_key, key


def apikey_revoke(member: Member, key_id: int) -> None:
    with transaction.atomic():
        revoked = ApiKey.objects.filter(id=key_id, member=member, revoked_at=None).update(
            revoked_at=timezone.now()
        )
        if not revoked:
            raise IdentityError("No such key, or it is already revoked.")
        audit_record(AuditAction.APIKEY_REVOKED, actor=member.pubkey, subject=str(key_id))


def request_authenticate(authorization: str, *, urls: set[str], method: str, body: bytes) -> Member:
    """The member behind `Authorization: Bearer <API key>` or `Authorization: Nostr <event>`."""
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return _apikey_member(credential.strip())
    if scheme.lower() == "nostr":
        event_json = nip98.event_from_authorization(authorization)
        signed = nip98.verify(event_json, urls=urls, method=method, body=body, now=int(time.time()))
        event_remember(signed.event_id, signed.created_at)
        member = Member.objects.filter(pubkey=signed.pubkey, is_active=True).first()
        if member is None:
            raise AuthRefused("The signing key is not a member of this node.")
        return member
    raise AuthRefused("Send 'Authorization: Bearer <API key>' or 'Authorization: Nostr <event>'.")


def _apikey_member(key: str) -> Member:
    api_key = (
        ApiKey.objects.select_related("member")
        .filter(key_hash=_digest(key), revoked_at=None, member__is_active=True)
        .first()
    )
    if api_key is None:
        raise AuthRefused("The API key is unknown or revoked.")
    now = timezone.now()
    # One write a minute is enough to show "last used", and keeps requests cheap.
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key.member


def _digest(secret: str) -> str:
    # Keys and tokens are 32 random bytes: a plain hash is enough, no stretching needed.
    return hashlib.sha256(secret.encode()).hexdigest()
