"""Live updates of agent tasks to the dashboard (the UI's part): `task_changed` tells every
open agents page that a task moved, so what waits for a person shows without a reload."""

from __future__ import annotations


def task_changed(task_id: int) -> None:
    """A task or one of its steps changed state (called after the change is committed)."""
