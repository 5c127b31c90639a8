"""Live updates of agent tasks to the dashboard: `task_changed` tells the open agents pages of
the person who asked, and every owner's, that a task moved, so what waits for a person shows
without a reload. The message names the task and nothing else: each page fetches what it may
see again, through the same checks as a page load."""

from __future__ import annotations

from apps.agents.models import Task
from sovereign.live_events import publish_after_commit

OWNERS_GROUP = "agents-owners"


def member_group(member_id: int) -> str:
    """The channel-layer group of one member's open agents pages."""
    return f"agents-member-{member_id}"


def task_changed(task_id: int) -> None:
    """A task or one of its steps changed state (called after the change is committed)."""
    asker = Task.objects.filter(pk=task_id).values_list("asked_by_id", flat=True).first()
    message = {"type": "agents.changed", "task_id": task_id}
    publish_after_commit(OWNERS_GROUP, message)
    if asker is not None:
        publish_after_commit(member_group(asker), message)
