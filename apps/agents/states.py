"""The states of a task and of its steps, the moves allowed between them, and the one way to move.

Every move is a conditional UPDATE: `filter(pk=…, state=source).update(state=target)`. The
database decides who got there first; zero rows updated means another worker, approver or
canceller moved the row before us, and the caller must not act as if it had. A move the table
below does not allow is a programming error and raises before touching the database.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone


class TaskState(models.TextChoices):
    DRAFT = "draft", "Draft"
    AWAITING_PLAN_APPROVAL = "awaiting_plan_approval", "Waiting for the plan to be approved"
    RUNNING = "running", "Running"
    AWAITING_STEP_APPROVAL = "awaiting_step_approval", "Waiting for a step to be approved"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"


class StepState(models.TextChoices):
    PLANNED = "planned", "Planned"
    AWAITING_APPROVAL = "awaiting_approval", "Waiting for approval"
    APPROVED = "approved", "Approved, not started"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"


T, S = TaskState, StepState

TASK_MOVES: dict[str, frozenset[str]] = {
    T.DRAFT: frozenset({T.AWAITING_PLAN_APPROVAL, T.CANCELLED}),
    T.AWAITING_PLAN_APPROVAL: frozenset({T.RUNNING, T.CANCELLED, T.EXPIRED}),
    T.RUNNING: frozenset({T.AWAITING_STEP_APPROVAL, T.DONE, T.FAILED, T.CANCELLED}),
    T.AWAITING_STEP_APPROVAL: frozenset({T.RUNNING, T.FAILED, T.CANCELLED, T.EXPIRED}),
    T.DONE: frozenset(),
    T.FAILED: frozenset(),
    T.CANCELLED: frozenset(),
    T.EXPIRED: frozenset(),
}

STEP_MOVES: dict[str, frozenset[str]] = {
    # Planned to approved: released by a rule the owner set on the task, without asking again.
    S.PLANNED: frozenset({S.AWAITING_APPROVAL, S.APPROVED, S.RUNNING, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.APPROVED: frozenset({S.RUNNING, S.CANCELLED}),
    # A running step is never cancelled by a move: it finishes or fails, and a cancelled task
    # pays nothing new because the step's payment is keyed by the step (the wallet's journal).
    S.RUNNING: frozenset({S.DONE, S.FAILED}),
    S.DONE: frozenset(),
    S.FAILED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
}

TASK_FINAL = frozenset(state for state, onward in TASK_MOVES.items() if not onward)
STEP_FINAL = frozenset(state for state, onward in STEP_MOVES.items() if not onward)


class MoveNotAllowed(Exception):
    """The table has no such move: a bug in the caller, not a race."""


def move(
    rows: models.QuerySet[Any],
    moves: dict[str, frozenset[str]],
    source: str,
    target: str,
    **fields: Any,
) -> bool:
    """Move the row(s) in `rows` from `source` to `target` if they are still in `source`;
    True when this call moved them."""
    if target not in moves.get(source, frozenset()):
        raise MoveNotAllowed(f"No move from {source!r} to {target!r}.")
    return bool(rows.filter(state=source).update(state=target, updated_at=timezone.now(), **fields))
