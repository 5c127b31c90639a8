"""The node's own health: what the System page and /healthz report, and the worker's reports."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.inference import services as inference
from apps.system.models import WorkerHeartbeat, WorkerProbe
from apps.wallet import services as wallet
from sovereign.live_events import publish_after_commit

logger = logging.getLogger(__name__)

SYSTEM_GROUP = "system"
State = Literal["up", "down", "off"]  # off: not configured on this node, and not needed


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    label: str
    state: State
    detail: str


def status_snapshot() -> dict[str, Any]:
    """Every component's state, as the System page and /healthz show it."""
    components = [
        web_status(), worker_status(), broker_status(), engine_component(), lightning_component()
    ]  # fmt: skip
    return {
        "ok": all(component.state != "down" for component in components),
        "components": [asdict(component) for component in components],
    }


def web_status() -> ComponentStatus:
    # Whoever computes this is the web server answering a request: it is up.
    return ComponentStatus("web", "Web server", "up", f"Answering at {settings.PUBLIC_URL}")


def worker_status() -> ComponentStatus:
    fresh_since = timezone.now() - timedelta(seconds=3 * settings.HEARTBEAT_SECONDS)
    heartbeats = WorkerHeartbeat.objects.order_by("-last_seen")
    alive = [h for h in heartbeats if h.stopped_at is None and h.last_seen >= fresh_since]
    if alive:
        names = ", ".join(f"{h.hostname} (pid {h.pid})" for h in alive)
        return ComponentStatus("worker", "Worker", "up", f"Taking tasks: {names}")
    last = heartbeats.first()
    if last is None:
        detail = "No worker has started yet."
    elif last.stopped_at is not None:
        detail = f"{last.hostname} stopped at {last.stopped_at:%Y-%m-%d %H:%M:%S} UTC."
    else:
        detail = f"{last.hostname} has not reported since {last.last_seen:%Y-%m-%d %H:%M:%S} UTC."
    return ComponentStatus("worker", "Worker", "down", detail)


def engine_component() -> ComponentStatus:
    up, detail = inference.engine_state()
    return ComponentStatus("engine", "Model engine", "up" if up else "down", detail)


def lightning_component() -> ComponentStatus:
    if not wallet.node_configured():
        return ComponentStatus(
            "lightning", "Lightning node", "off", "Not connected: paying is off."
        )
    # Never waits on the node for long: a node that hangs shows its last answer, marked.
    node = wallet.node_summary()
    if not node["connected"]:
        return ComponentStatus("lightning", "Lightning node", "down", node["error"])
    detail = (f"{node['alias'] or node['id'][:16]} ({node['id'][:12]}…) on {node['network']}, "
              f"{node['channels']} channel(s), {node['spendable_msat'] // 1000:,} sat to spend, "
              f"{node['receivable_msat'] // 1000:,} sat to receive")  # fmt: skip
    if node.get("stale"):
        detail += (f"; as it answered {node['answered_seconds_ago']} s ago: it is slow to "
                   "answer now")  # fmt: skip
    return ComponentStatus("lightning", "Lightning node", "up", detail)


def broker_status() -> ComponentStatus:
    if settings.REDIS_URL:
        return _redis_broker_status(settings.REDIS_URL)
    broker_dir = settings.BROKER_DIR
    if not (broker_dir.is_dir() and os.access(broker_dir, os.W_OK)):
        return ComponentStatus("broker", "Broker", "down", "The broker folder is not writable.")
    waiting = sum(1 for entry in os.scandir(broker_dir) if entry.name.endswith(".msg"))
    detail = f"Embedded, in the data directory; {waiting} message(s) waiting."
    return ComponentStatus("broker", "Broker", "up", detail)


def _redis_broker_status(url: str) -> ComponentStatus:
    parts = urlsplit(url)
    where = f"Redis at {parts.hostname}:{parts.port or 6379}"  # never the password
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        return ComponentStatus("broker", "Broker", "down", f"{where}: {error}")
    finally:
        client.close()
    return ComponentStatus("broker", "Broker", "up", where)


# The worker's reports (called from the worker's heartbeat step).


def worker_started(hostname: str, pid: int) -> None:
    now = timezone.now()
    with transaction.atomic():
        WorkerHeartbeat.objects.update_or_create(
            hostname=hostname,
            defaults={"pid": pid, "started_at": now, "last_seen": now, "stopped_at": None},
        )
        event_publish("worker")


def worker_beat(hostname: str) -> None:
    try:
        WorkerHeartbeat.objects.filter(hostname=hostname).update(
            last_seen=timezone.now(), stopped_at=None
        )
    except Exception:
        # A missed beat (database busy) is survivable; the next one tries again.
        logger.warning("Could not record the worker heartbeat", exc_info=True)


def worker_stopped(hostname: str) -> None:
    with transaction.atomic():
        WorkerHeartbeat.objects.filter(hostname=hostname).update(stopped_at=timezone.now())
        event_publish("worker")


# Probes: a test task through the broker, answered by whichever worker takes it.


def probe_send() -> WorkerProbe:
    from apps.system.tasks import probe_answer

    with transaction.atomic():
        probe = WorkerProbe.objects.create()
        transaction.on_commit(lambda: probe_answer.delay(str(probe.id)))
    return probe


def probe_answer(probe_id: str, worker: str) -> None:
    with transaction.atomic():
        answered = WorkerProbe.objects.filter(id=probe_id, answered_at__isnull=True).update(
            answered_at=timezone.now(), answered_by=worker
        )
        if answered:
            probe = WorkerProbe.objects.get(id=probe_id)
            event_publish(
                "probe", probe_id=probe_id, worker=worker, round_trip_ms=probe.round_trip_ms
            )


def probe_wait(probe_id: str, timeout: float) -> WorkerProbe:
    """The probe once answered, or as it stands when the timeout runs out."""
    deadline = time.monotonic() + timeout
    while True:
        probe = WorkerProbe.objects.get(id=probe_id)
        if probe.answered_at is not None or time.monotonic() >= deadline:
            return probe
        time.sleep(0.1)


# Live events to the browsers watching the System page.


def event_publish(kind: str, **data: Any) -> None:
    """Tell every open System page that something changed, once the transaction commits."""
    publish_after_commit(SYSTEM_GROUP, {"type": "system.event", "kind": kind, "data": data})
