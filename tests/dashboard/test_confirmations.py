"""Every save says it worked (or what went wrong); destructive forms ask first."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.identity import services
from apps.identity.models import ApiKey, Invite, Member
from apps.inference import services as inference
from apps.inference.models import ModelDownload

pytestmark = pytest.mark.django_db


def said(response: Any) -> list[tuple[str, str]]:
    """The messages on a page, as (role, text)."""
    page = response.content.decode()
    found = re.findall(r'<p class="message [a-z]+" role="(status|alert)">([^<]*)</p>', page)
    return [(role, html.unescape(text)) for role, text in found]


def post(client: Client, path: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    return said(client.post(path, data, follow=True))


def test_each_change_on_the_people_page_is_confirmed(
    owner_client: Client, owner: Member, keys: Any
) -> None:
    npub = keys["member"].public_key().to_bech32()

    assert post(owner_client, "/people/", {"action": "add", "pubkey": npub, "role": "friend"}) == [
        ("status", f"Added {Member.objects.get(role='friend').display_name} as a friend.")
    ]
    changed = post(
        owner_client, "/people/", {"action": "set_role", "pubkey": npub, "role": "member"}
    )
    assert changed == [
        ("status", f"{Member.objects.get(role='member').display_name} is now a member.")
    ]
    removed = post(owner_client, "/people/", {"action": "remove", "pubkey": npub})
    assert removed[0][0] == "status" and removed[0][1].startswith("Removed npub1")


def test_invites_made_and_cancelled_are_confirmed(owner_client: Client, owner: Member) -> None:
    made = owner_client.post("/people/", {"action": "invite_link", "role": "member"})
    assert said(made) == [("status", "Invite link made for a member.")]

    invite = Invite.objects.get()
    cancelled = post(owner_client, "/people/", {"action": "invite_cancel", "invite_id": invite.pk})
    assert cancelled == [("status", "Invite cancelled: its link no longer works.")]


def test_a_refused_change_is_an_alert_and_not_a_success(
    owner_client: Client, owner: Member
) -> None:
    refused = post(owner_client, "/people/", {"action": "remove", "pubkey": owner.pubkey})
    assert refused == [("alert", "The owner can't be removed.")]


def test_api_keys_made_and_revoked_are_confirmed(member_client: Client, member: Member) -> None:
    made = member_client.post("/keys/", {"action": "create", "name": "laptop"})
    assert said(made) == [("status", "Made the key “laptop”. Copy it now: it is shown once.")]

    key = ApiKey.objects.get()
    revoked = member_client.post("/keys/", {"action": "revoke", "key_id": key.pk})
    assert revoked.status_code == 302  # after a save, a fresh page: a reload saves nothing again
    assert said(member_client.get(revoked["Location"])) == [
        ("status", "Key revoked: programs using it are refused from now on.")
    ]


def test_the_keys_page_shows_the_base_url_and_the_new_key_with_copy_buttons(
    member_client: Client,
) -> None:
    page = member_client.post("/keys/", {"action": "create", "name": "phone"}).content.decode()

    assert '<code id="base-url">http://testserver/v1</code>' in page
    assert 'data-copy-target="#base-url"' in page
    assert 'data-copy-target="#new-key"' in page
    assert 'base_url="http://testserver/v1"' in page


def test_models_added_and_removed_are_confirmed(
    owner_client: Client, settings: Any, tmp_path: Path
) -> None:
    settings.DATA_DIR = tmp_path
    source = inference.bundled_model_file()
    assert source is not None

    added = post(
        owner_client, "/models/", {"action": "add_path", "path": str(source), "name": "tiny"}
    )
    assert added == [("status", "Added tiny.")]
    removed = post(owner_client, "/models/", {"action": "remove", "name": "tiny"})
    assert removed == [("status", "Removed tiny.")]


def test_a_cancelled_download_is_confirmed(owner_client: Client, owner: Member) -> None:
    download = ModelDownload.objects.create(url="https://example.org/a.gguf", name="a")

    cancelled = post(
        owner_client, "/models/", {"action": "download_cancel", "download": download.pk}
    )

    assert cancelled == [("status", "Download cancelled.")]


@pytest.mark.parametrize(
    ("path", "confirm"),
    [
        ("/people/", 'data-confirm="Remove '),
        ("/people/", 'data-confirm="Cancel invite '),
        ("/keys/", 'data-confirm="Revoke the key '),
        ("/models/", 'data-confirm="Remove tiny?'),
        ("/models/", 'data-confirm="Cancel the download of a?'),
    ],
)
def test_destructive_forms_ask_first(
    owner_client: Client, owner: Member, friend: Member, settings: Any, tmp_path: Path,
    path: str, confirm: str,
) -> None:  # fmt: skip
    settings.DATA_DIR = tmp_path
    services.invite_create("member", owner)
    services.apikey_create(owner, "laptop")
    source = inference.bundled_model_file()
    assert source is not None
    inference.model_add_path(source, name="tiny")
    ModelDownload.objects.create(url="https://example.org/a.gguf", name="a")

    assert confirm in owner_client.get(path).content.decode()
