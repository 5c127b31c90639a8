"""Where each person lands: the owner's checklist, the friends' page, and logging out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.identity import checklist, services
from apps.identity.models import Member
from apps.inference import services as inference
from apps.providers.models import Provider
from tests.lightningd import LightningdDouble

pytestmark = pytest.mark.django_db
ENGINE_UP = {"loaded": None, "running": 0, "waiting": 0, "slots": []}


@pytest.fixture(autouse=True)
def empty_models_dir(settings: Any, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path
    settings.LIGHTNING_RPC = ""


def ticked(client: Client) -> dict[str, bool]:
    page = client.get("/start/").content.decode()
    keys = ("model", "lightning", "household", "provider")
    return {key: f'data-item="{key}" data-done="true"' in page for key in keys}


def test_the_owner_lands_on_the_checklist_until_it_is_dismissed(owner_client: Client) -> None:
    assert owner_client.get("/")["Location"] == "/start/"

    dismissed = owner_client.post("/start/", follow=True)

    assert dismissed.redirect_chain[-1][0] == "/chat/"
    assert owner_client.get("/")["Location"] == "/chat/"
    page = owner_client.get("/start/").content.decode()
    assert "Dismiss" not in page
    assert 'href="/start/"' in page  # still in the owner's menu


def test_the_owner_lands_in_the_chat_once_everything_is_done(
    owner_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checklist, "checklist_items", lambda: [
        checklist.ChecklistItem("model", "A model", True, ""),
        checklist.ChecklistItem("later", "Not yet", False, "", available=False),
    ])  # fmt: skip
    assert owner_client.get("/")["Location"] == "/chat/"


def test_the_checklist_is_the_owners(member_client: Client, friend_client: Client) -> None:
    assert member_client.get("/start/").status_code == 403
    assert friend_client.get("/start/").status_code == 403
    assert member_client.get("/")["Location"] == "/chat/"


def test_the_model_step_is_ticked_when_a_model_is_on_disk_and_the_engine_answers(
    owner_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ticked(owner_client)["model"] is False

    inference.catalog_sync()  # the bundled model, as on a first start
    page = owner_client.get("/start/").content.decode()
    assert ticked(owner_client)["model"] is False  # no engine runs in this test
    assert "the engine is not up yet" in page

    monkeypatch.setattr(inference, "engine_status", lambda: ENGINE_UP)
    assert ticked(owner_client)["model"] is True


def test_the_household_step_is_ticked_by_an_invite_or_another_person(
    owner_client: Client, owner: Member, keys: Any
) -> None:
    assert ticked(owner_client)["household"] is False
    services.invite_create("member", owner)
    assert ticked(owner_client)["household"] is True


def test_the_household_step_is_ticked_by_a_friend_added(
    owner_client: Client, friend: Member
) -> None:
    assert ticked(owner_client)["household"] is True


def test_the_lightning_step_says_how_to_connect_a_node(owner_client: Client) -> None:
    page = owner_client.get("/start/").content.decode()

    assert ticked(owner_client)["lightning"] is False
    assert "SOVEREIGN_LIGHTNING_RPC" in page
    assert "Choose Lightning node" in page  # StartOS
    assert "CLNRest" in page  # Umbrel
    assert "SOVEREIGN_LIGHTNING_REST_URL" in page


def test_an_outside_provider_is_ticked_once_one_is_added(owner_client: Client) -> None:
    assert ticked(owner_client)["provider"] is False
    assert 'data-item="provider" data-done="false"' in owner_client.get("/start/").content.decode()

    Provider.objects.create(  # as provider_add saves it, without asking anyone for a catalog
        name="lan-box", kind="openai", base_url="http://127.0.0.1:9", max_price_msat=1, topup_msat=1
    )

    assert ticked(owner_client)["provider"] is True
    assert "Stronger models from lan-box" in owner_client.get("/start/").content.decode()


def test_each_step_says_done_or_to_do_in_words(owner_client: Client, friend: Member) -> None:
    page = owner_client.get("/start/").content.decode()
    assert "Done" in page and "To do" in page


def test_a_friend_lands_on_what_is_shared_with_them(friend_client: Client, owner: Member) -> None:
    assert friend_client.get("/")["Location"] == "/shared/"
    page = friend_client.get("/shared/").content.decode()

    assert "Nothing is shared with you yet" in page
    assert owner.display_name in page
    assert 'href="/keys/"' in page
    assert "Shared with me" in page


def test_the_household_is_not_sent_to_the_friends_page(member_client: Client) -> None:
    assert member_client.get("/shared/").status_code == 403


def test_logout_from_a_link_asks_first_and_a_post_logs_out(owner_client: Client) -> None:
    asked = owner_client.get("/logout/")

    assert asked.status_code == 200
    assert "Log out of Sovereign?" in asked.content.decode()
    assert owner_client.get("/keys/").status_code == 200  # still logged in

    assert owner_client.post("/logout/")["Location"] == "/login/"
    assert owner_client.get("/keys/")["Location"] == "/login/?next=/keys/"


def test_logout_from_a_link_when_logged_out_leads_to_the_login(
    client: Client, owner: Member
) -> None:
    assert client.get("/logout/")["Location"] == "/login/"


def test_the_lightning_step_is_ticked_once_a_node_answers(
    owner_client: Client, settings: Any, tmp_path: Path
) -> None:
    with LightningdDouble(tmp_path / "node", alias="household") as node:
        settings.LIGHTNING_RPC = str(node.rpc_file)

        page = owner_client.get("/start/").content.decode()

        assert ticked(owner_client)["lightning"] is True
        assert "Connected to household" in page
