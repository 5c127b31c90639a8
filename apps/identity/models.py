"""People are their Nostr keys: members, their API keys, invites, and the audit trail."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.db import models
from nostr_sdk import PublicKey


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    MEMBER = "member", "Member"
    FRIEND = "friend", "Friend"


class MemberManager(BaseUserManager["Member"]):
    def create_user(self, pubkey: str, role: str = Role.MEMBER, **fields: Any) -> Member:
        member = self.model(pubkey=pubkey, role=role, **fields)
        member.set_unusable_password()  # no passwords: a member proves their key
        member.save(using=self._db)
        return member


class Member(AbstractBaseUser):
    """A person known by their Nostr public key (hex), with a role on this node."""

    pubkey = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=10, choices=Role.choices)
    name = models.CharField(max_length=100, blank=True)
    # Every name the Nostr profile gives (`name`, `display_name`): privacy keeps them all out of
    # outside requests, while `name` is the one shown.
    profile_names = models.JSONField(default=list, blank=True)
    picture = models.URLField(max_length=500, blank=True)
    profile_fetched_at = models.DateTimeField(null=True, blank=True)
    joined_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=True)
    # The owner's first-run checklist leads the way until it is done or put away.
    checklist_dismissed_at = models.DateTimeField(null=True, blank=True)

    USERNAME_FIELD = "pubkey"
    REQUIRED_FIELDS: ClassVar[list[str]] = []
    objects = MemberManager()

    def __str__(self) -> str:
        return self.display_name

    @property
    def npub(self) -> str:
        return str(PublicKey.parse(self.pubkey).to_bech32())

    @property
    def short_npub(self) -> str:
        npub = self.npub
        return f"{npub[:12]}…{npub[-6:]}"

    @property
    def display_name(self) -> str:
        return self.name or self.short_npub

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER


class ApiKey(models.Model):
    """A named key a member's programs use; only its hash is kept."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class LoginChallenge(models.Model):
    """A single-use value a login event must carry, so an old signed event can't be replayed."""

    value = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.value[:8]


class SeenEvent(models.Model):
    """Ids of signed events already accepted, kept as long as they could still be valid."""

    event_id = models.CharField(max_length=64, primary_key=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.event_id


class LoginCode(models.Model):
    """A one-time code sent to a member by Nostr DM; only its hash is kept."""

    pubkey = models.CharField(max_length=64, db_index=True)
    code_hash = models.CharField(max_length=64)
    expires_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"code for {self.pubkey[:8]}"


class Invite(models.Model):
    """A single-use, expiring link that makes whoever logs in with it a member in a role."""

    token_hash = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=10, choices=Role.choices)
    created_by = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"invite {self.pk} ({self.role})"


class Attempt(models.Model):
    """One login or code attempt, counted per key (an address, a pubkey) for rate limits."""

    key = models.CharField(max_length=100, db_index=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return self.key


class AuditAction(models.TextChoices):
    """What identity writes to the audit trail (apps.audit), with the labels people read."""

    NODE_CLAIMED = "node_claimed", "Node claimed"
    LOGIN = "login", "Logged in"
    LOGIN_FAILED = "login_failed", "Login refused"
    LOGOUT = "logout", "Logged out"
    CODE_SENT = "code_sent", "Login code sent"
    MEMBER_ADDED = "member_added", "Member added"
    MEMBER_REMOVED = "member_removed", "Member removed"
    ROLE_CHANGED = "role_changed", "Role changed"
    INVITE_CREATED = "invite_created", "Invite created"
    INVITE_USED = "invite_used", "Invite used"
    INVITE_CANCELLED = "invite_cancelled", "Invite cancelled"
    APIKEY_CREATED = "apikey_created", "API key created"
    APIKEY_REVOKED = "apikey_revoked", "API key revoked"
