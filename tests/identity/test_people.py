"""Claiming the node, roles and their boundaries, invites, removal, API keys, the audit trail."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from nostr_sdk import EventBuilder, Kind, Tag

from apps.audit.models import AuditEvent
from apps.audit.services import audit_rows
from apps.identity import services
from apps.identity.models import ApiKey, Member
from tests.instances import signed_login_header

pytestmark = pytest.mark.django_db
LOGIN_URL = "http://localhost:8000/auth/login"


def extension_login(client: Client, keys: Any) -> Any:
    value = client.post("/auth/challenge").json()["challenge"]
    return client.post(
        "/auth/login", HTTP_AUTHORIZATION=signed_login_header(keys, LOGIN_URL, value)
    )


def test_an_unclaimed_node_leads_every_page_to_setup(client: Client) -> None:
    for path in ("/", "/system/", "/people/", "/keys/", "/login/"):
        assert client.get(path).headers["Location"] == "/setup/"
    assert client.get("/healthz").status_code == 200


def test_the_setup_secret_then_a_login_claims_the_node(
    client: Client, keys: Any, settings: Any
) -> None:
    refused = client.post("/setup/", {"secret": "wrong"})
    assert "not the setup secret" in refused.content.decode()
    assert extension_login(client, keys["owner"]).status_code == 401  # no secret: no claim

    planted = client.session.session_key
    client.post("/setup/", {"secret": services.setup_secret()})
    assert client.session.session_key != planted  # a session id known beforehand is useless
    response = extension_login(client, keys["owner"])

    assert response.status_code == 200
    assert response.json()["role"] == "owner"
    assert AuditEvent.objects.filter(action="node_claimed").count() == 1
    assert not (settings.DATA_DIR / "setup_secret").exists()


def test_the_setup_secret_works_once(client: Client, owner: Member, keys: Any) -> None:
    assert not services.setup_secret_matches(services.setup_secret())
    assert client.get("/setup/").headers["Location"] == "/login/"
    other = Client()
    other.post("/setup/", {"secret": services.setup_secret()})
    assert extension_login(other, keys["stranger"]).status_code == 401
    assert Member.objects.filter(role="owner").count() == 1


@pytest.mark.parametrize("path", ["/people/"])
def test_a_friend_or_member_asking_for_an_owner_page_gets_403(
    path: str, friend_client: Client, member_client: Client, owner_client: Client
) -> None:
    assert friend_client.get(path).status_code == 403
    assert member_client.get(path).status_code == 403
    assert owner_client.get(path).status_code == 200


def test_a_friend_may_make_api_keys_but_not_see_the_system(friend_client: Client) -> None:
    assert friend_client.get("/keys/").status_code == 200
    assert friend_client.get("/system/").status_code == 403
    assert friend_client.get("/").headers["Location"] == "/shared/"


def test_someone_logged_out_is_sent_to_log_in(owner: Member, client: Client) -> None:
    assert client.get("/people/").headers["Location"] == "/login/?next=/people/"


def test_the_owner_adds_changes_and_removes_a_person(
    owner_client: Client, owner: Member, keys: Any
) -> None:
    npub = keys["member"].public_key().to_bech32()
    owner_client.post("/people/", {"action": "add", "pubkey": npub, "role": "friend"})
    person = Member.objects.get(pubkey=keys["member"].public_key().to_hex())
    assert person.role == "friend"

    owner_client.post("/people/", {"action": "set_role", "pubkey": npub, "role": "member"})
    person.refresh_from_db()
    assert person.role == "member"

    owner_client.post("/people/", {"action": "remove", "pubkey": npub})
    assert not Member.objects.filter(pk=person.pk).exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"member_added", "role_changed", "member_removed"} <= actions
    page = owner_client.get("/people/").content.decode()
    assert "Role changed" in page  # the audit trail is on the owner's page


def test_bad_input_on_the_people_page_changes_nothing(owner_client: Client, owner: Member) -> None:
    for pubkey in ("nonsense", "nsec1" + "q" * 58, ""):
        response = owner_client.post(
            "/people/", {"action": "add", "pubkey": pubkey, "role": "member"}, follow=True
        )
        assert "alert" in response.content.decode()
    owner_client.post("/people/", {"action": "remove", "pubkey": owner.pubkey})
    owner_client.post("/people/", {"action": "set_role", "pubkey": owner.pubkey, "role": "friend"})
    assert list(Member.objects.values_list("role", flat=True)) == ["owner"]


def test_removal_ends_sessions_and_revokes_keys_at_once(
    member_client: Client, member: Member, owner: Member
) -> None:
    _, key = services.apikey_create(member, "laptop")
    assert Client().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200

    services.member_remove(member.pubkey, actor=owner.pubkey)

    assert member_client.get("/system/").status_code == 302
    assert Client().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 401
    assert not ApiKey.objects.exists()


def test_an_invite_link_works_once_and_gives_its_role(
    owner_client: Client, owner: Member, keys: Any
) -> None:
    response = owner_client.post("/people/", {"action": "invite_link", "role": "friend"})
    link = response.context["invite_link"]
    path = link[link.index("/login/") :]

    guest = Client()
    guest.get(path)
    assert extension_login(guest, keys["friend"]).json()["role"] == "friend"

    second = Client()
    second.get(path)
    refused = extension_login(second, keys["stranger"])
    assert refused.status_code == 401
    assert "invite link is used" in refused.json()["error"]


def test_the_owner_cancels_an_open_invite(owner_client: Client, owner: Member, keys: Any) -> None:
    invite, token = services.invite_create("member", owner)
    cancel_button = f'name="invite_id" value="{invite.pk}"'
    assert cancel_button in owner_client.get("/people/").content.decode()

    owner_client.post("/people/", {"action": "invite_cancel", "invite_id": invite.pk})

    assert cancel_button not in owner_client.get("/people/").content.decode()
    guest = Client()
    guest.get(f"/login/?invite={token}")
    assert extension_login(guest, keys["stranger"]).status_code == 401
    assert AuditEvent.objects.filter(action="invite_cancelled").exists()


def test_an_expired_invite_is_refused(owner: Member, keys: Any) -> None:
    invite, token = services.invite_create("member", owner)
    type(invite).objects.filter(pk=invite.pk).update(expires_at=invite.created_at)
    guest = Client()
    guest.get(f"/login/?invite={token}")
    assert extension_login(guest, keys["stranger"]).status_code == 401


def test_an_api_key_is_shown_once_stored_hashed_and_revocable(
    member_client: Client, member: Member
) -> None:
    page = member_client.post("/keys/", {"action": "create", "name": "scripts"})
    key = page.context["new_key"]
    stored = ApiKey.objects.get()
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in member_client.get("/keys/").content.decode()

    me = Client().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert me.json() == {"npub": member.npub, "role": "member", "name": member.display_name}
    stored.refresh_from_db()
    assert stored.last_used_at is not None

    member_client.post("/keys/", {"action": "revoke", "key_id": stored.id})
    revoked = Client().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "invalid_api_key"


def nip98_header(keys: Any, url: str, method: str, body: bytes = b"") -> str:
    tags = [["u", url], ["method", method]]
    if body:
        tags.append(["payload", hashlib.sha256(body).hexdigest()])
    event = EventBuilder(Kind(27235), "").tags([Tag.parse(t) for t in tags]).finalize(keys)
    return "Nostr " + base64.b64encode(event.as_json().encode()).decode()


def test_a_signed_request_authenticates_once(member: Member, keys: Any) -> None:
    header = nip98_header(keys["member"], "http://localhost:8000/api/me", "GET")

    assert Client().get("/api/me", HTTP_AUTHORIZATION=header).status_code == 200
    replay = Client().get("/api/me", HTTP_AUTHORIZATION=header)
    assert replay.status_code == 401
    assert "already used" in replay.json()["error"]["message"]


def test_a_signed_request_must_match_its_body(member: Member, keys: Any) -> None:
    signed_for = nip98_header(keys["member"], "http://localhost:8000/api/me", "GET", b"{}")
    response = Client().generic("GET", "/api/me", b'{"x":1}', HTTP_AUTHORIZATION=signed_for)
    assert response.status_code == 401
    assert "payload" in response.json()["error"]["message"]


def test_a_request_signed_by_a_key_not_on_the_node_is_refused(
    member: Member, stranger: Any
) -> None:
    header = nip98_header(stranger, "http://localhost:8000/api/me", "GET")

    response = Client().get("/api/me", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "The signing key is not a member of this node."


def test_the_commands_claim_add_remove_and_make_keys(keys: Any, capsys: Any) -> None:
    owner_npub = keys["owner"].public_key().to_bech32()
    call_command("claim", owner_npub)
    with pytest.raises(CommandError, match="already has an owner"):
        call_command("claim", keys["stranger"].public_key().to_bech32())

    call_command("member", "add", keys["friend"].public_key().to_hex(), "--role", "friend")
    call_command("apikey", "create", owner_npub, "--name", "cli")
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("sov_")
    call_command("member", "remove", keys["friend"].public_key().to_bech32())
    assert list(Member.objects.values_list("role", flat=True)) == ["owner"]


@pytest.mark.parametrize(
    ("value", "message"),
    [("nsec1abc", "secret key"), ("npub1nothing", "not a valid"), ("hello", "not an npub")],
)
def test_the_commands_refuse_anything_but_an_npub_or_hex(value: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("member", "add", value)


def test_the_node_key_is_kept_owner_only_and_stable(settings: Any) -> None:
    services._node_keys.cache_clear()
    first = services.node_npub()
    services._node_keys.cache_clear()
    assert services.node_npub() == first
    assert (settings.DATA_DIR / "node_key").stat().st_mode & 0o777 == 0o600


def test_a_member_with_an_invite_in_hand_logs_in_without_using_it(
    owner: Member, member: Member, keys: Any
) -> None:
    invite, token = services.invite_create("friend", owner)
    guest = Client()
    guest.get(f"/login/?invite={token}")

    assert extension_login(guest, keys["member"]).json()["role"] == "member"
    invite.refresh_from_db()
    assert invite.used_at is None


def test_the_audit_shows_npubs_and_the_shell_and_folds_anonymous_refusals(
    owner_client: Client, owner: Member, keys: Any
) -> None:
    friend_hex = keys["friend"].public_key().to_hex()
    call_command("member", "add", friend_hex, "--role", "friend")
    for _ in range(30):
        Client().post("/auth/login", HTTP_AUTHORIZATION="Nostr !!!")
    owner_client.post("/keys/", {"action": "create", "name": "laptop"})

    rows = audit_rows()
    page = owner_client.get("/people/").content.decode()
    audit = page[page.index('id="audit"') :]

    assert [(row.action, row.count) for row in rows[:2]] == [
        ("API key created", 1),
        ("Login refused", 30),
    ]
    added = next(row for row in rows if row.action == "Member added")
    assert added.who == "shell"
    assert added.about.startswith("npub1")
    assert friend_hex not in audit
    assert owner.pubkey not in audit
    assert "× 30" in audit


def test_member_list_shows_everyone_with_their_role(
    owner: Member, member: Member, capsys: Any
) -> None:
    call_command("member", "list")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[owner.npub, "owner"], [member.npub, "member"]]


def test_the_role_help_reads_as_plain_words(capsys: Any) -> None:
    with pytest.raises(SystemExit):
        call_command("member", "add", "--help")
    shown = capsys.readouterr().out
    assert "{member,friend}" in shown
    assert "Role." not in shown


def test_member_add_before_the_database_is_set_up_says_what_to_do(tmp_path: Any, keys: Any) -> None:
    from tests.instances import Instance

    fresh = Instance(tmp_path)
    result = fresh.manage("member", "add", keys["member"].public_key().to_bech32())

    assert result.returncode == 1
    assert "The database is not set up yet" in result.stderr
    assert "Traceback" not in result.stderr
