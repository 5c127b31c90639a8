"""What /healthz and the System page say about the web server, the worker and the broker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.identity import services as identity
from apps.system import services
from apps.system.models import WorkerHeartbeat, WorkerProbe

pytestmark = pytest.mark.django_db


def component(client: Client, name: str) -> dict[str, str]:
    health = client.get("/healthz").json()
    return next(c for c in health["components"] if c["name"] == name)


def test_healthz_answers_json_with_every_component(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert [c["name"] for c in response.json()["components"]] == [
        "web",
        "worker",
        "broker",
        "engine",
        "lightning",
    ]
    assert "no-cache" in response["Cache-Control"]


def test_a_node_without_lightning_shows_it_off(client: Client) -> None:
    lightning = component(client, "lightning")

    assert lightning["state"] == "off"
    assert "paying is off" in lightning["detail"]


def test_the_worker_is_down_until_one_reports(client: Client) -> None:
    worker = component(client, "worker")

    assert worker["state"] == "down"
    assert worker["detail"] == "No worker has started yet."
    assert client.get("/healthz").json()["ok"] is False


def test_a_worker_that_reported_is_up_and_named(client: Client) -> None:
    services.worker_started("worker@box", 4242)

    worker = component(client, "worker")

    assert worker["state"] == "up"
    assert "worker@box (pid 4242)" in worker["detail"]


def test_a_worker_that_stopped_is_down_at_once(client: Client) -> None:
    services.worker_started("worker@box", 4242)
    services.worker_stopped("worker@box")

    worker = component(client, "worker")

    assert worker["state"] == "down"
    assert worker["detail"].startswith("worker@box stopped at ")


def test_a_worker_whose_heartbeat_aged_is_down(client: Client, settings: object) -> None:
    services.worker_started("worker@box", 4242)
    aged = timezone.now() - timedelta(seconds=3 * settings.HEARTBEAT_SECONDS + 1)  # type: ignore[attr-defined]
    WorkerHeartbeat.objects.update(last_seen=aged)

    assert component(client, "worker")["state"] == "down"

    services.worker_beat("worker@box")

    assert component(client, "worker")["state"] == "up"


def test_the_embedded_broker_counts_waiting_messages(client: Client, settings: object) -> None:
    waiting = len(list(settings.BROKER_DIR.glob("*.msg")))  # type: ignore[attr-defined]
    (settings.BROKER_DIR / "1_abc.celery.msg").write_text("{}")  # type: ignore[attr-defined]

    broker = component(client, "broker")

    assert broker["state"] == "up"
    assert f"{waiting + 1} message(s) waiting" in broker["detail"]


def test_an_unreachable_redis_broker_is_down_and_its_password_stays_hidden(
    client: Client, settings: object
) -> None:
    settings.REDIS_URL = "redis://:hunter2secret@127.0.0.1:9/0"  # type: ignore[attr-defined]

    broker = component(client, "broker")

    assert broker["state"] == "down"
    assert broker["detail"].startswith("Redis at 127.0.0.1:9")
    assert "hunter2secret" not in client.get("/healthz").content.decode()


def test_the_system_page_shows_each_component(member_client: Client) -> None:
    services.worker_started("worker@box", 4242)

    page = member_client.get("/system/").content.decode()

    assert 'data-component="worker" data-state="up"' in page
    assert 'data-component="broker" data-state="up"' in page
    assert f'<code id="node-npub">{identity.node_npub()}</code>' in page


def test_the_home_page_leads_the_household_to_the_chat(member_client: Client) -> None:
    assert member_client.get("/").headers["Location"] == "/chat/"


def test_a_friend_may_not_see_the_system_page(friend_client: Client) -> None:
    assert friend_client.get("/system/").status_code == 403
    assert friend_client.post("/system/probe").status_code == 403


def test_a_probe_needs_a_post_with_a_csrf_token(member: object) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(member)  # type: ignore[arg-type]

    assert strict.get("/system/probe").status_code == 405
    assert strict.post("/system/probe").status_code == 403
    assert WorkerProbe.objects.count() == 0


def test_answering_a_probe_twice_counts_once(django_capture_on_commit_callbacks: object) -> None:
    probe = WorkerProbe.objects.create()

    services.probe_answer(str(probe.id), worker="worker@one")
    services.probe_answer(str(probe.id), worker="worker@two")

    probe.refresh_from_db()
    assert probe.answered_by == "worker@one"
    assert probe.round_trip_ms is not None


@pytest.mark.parametrize(
    "headers",
    [
        {"REMOTE_ADDR": "10.21.21.5"},  # another container, or the LAN through a store's proxy
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "192.168.1.20"},  # a local proxy
    ],
)
def test_healthz_tells_others_only_the_states(client: Client, headers: dict[str, str]) -> None:
    services.worker_started("worker@kitchen-box", 4242)

    health = client.get("/healthz", **headers).json()  # type: ignore[arg-type]

    assert {c["name"]: c["state"] for c in health["components"]}["worker"] == "up"
    assert all(set(c) == {"name", "label", "state"} for c in health["components"])
    assert "kitchen-box" not in str(health)


def test_healthz_gives_the_details_to_the_household(member_client: Client) -> None:
    services.worker_started("worker@kitchen-box", 4242)

    health = member_client.get("/healthz", REMOTE_ADDR="10.21.21.5").json()

    assert "kitchen-box" in {c["name"]: c["detail"] for c in health["components"]}["worker"]
