"""Every move the tables allow happens once; every other one is refused before the database."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import product
from typing import Any

import pytest
from django.db import connection

from apps.agents import approvals, services
from apps.agents.models import Approval, Step, Task
from apps.agents.services import AgentError
from apps.agents.states import (
    STEP_MOVES,
    TASK_MOVES,
    MoveNotAllowed,
    StepState,
    TaskState,
    move,
)
from apps.audit.models import AuditEvent
from tests.agents.conftest import second_opinion, steps_of

TASK_PAIRS = list(product(TaskState.values, TaskState.values))
STEP_PAIRS = list(product(StepState.values, StepState.values))


def _task_in(state: str, member: Any) -> Task:
    return Task.objects.create(goal="g", asked_by=member, budget_cap_msat=0, policy={}, state=state)


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), TASK_PAIRS)
def test_a_task_moves_only_as_the_table_says(member: Any, source: str, target: str) -> None:
    task = _task_in(source, member)
    rows = Task.objects.filter(pk=task.pk)
    if target in TASK_MOVES[source]:
        assert move(rows, TASK_MOVES, source, target) is True
        assert move(rows, TASK_MOVES, source, target) is False  # it is not there any more
    else:
        with pytest.raises(MoveNotAllowed):
            move(rows, TASK_MOVES, source, target)
    expected = target if target in TASK_MOVES[source] else source
    assert Task.objects.get(pk=task.pk).state == expected


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), STEP_PAIRS)
def test_a_step_moves_only_as_the_table_says(member: Any, source: str, target: str) -> None:
    step = Step.objects.create(
        task=_task_in(TaskState.RUNNING, member),
        position=1,
        kind=Step.Kind.MODEL_CALL,
        prompt="p",
        parallel_group=1,
        state=source,
    )
    rows = Step.objects.filter(pk=step.pk)
    if target in STEP_MOVES[source]:
        assert move(rows, STEP_MOVES, source, target) is True
    else:
        with pytest.raises(MoveNotAllowed):
            move(rows, STEP_MOVES, source, target)
    expected = target if target in STEP_MOVES[source] else source
    assert Step.objects.get(pk=step.pk).state == expected


@pytest.mark.django_db
def test_a_move_from_a_state_the_row_has_left_changes_nothing(member: Any) -> None:
    task = _task_in(TaskState.CANCELLED, member)
    rows = Task.objects.filter(pk=task.pk)
    assert move(rows, TASK_MOVES, TaskState.RUNNING, TaskState.DONE) is False
    assert Task.objects.get(pk=task.pk).state == TaskState.CANCELLED


@pytest.mark.django_db
def test_final_states_lead_nowhere() -> None:
    for final in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED):
        assert TASK_MOVES[final] == frozenset()


@pytest.mark.django_db(transaction=True)
def test_of_two_approvals_at_once_only_one_wins(owner: Any, member: Any) -> None:
    task = second_opinion(member)
    services.plan_approve(task, member, "dashboard", digest=services.plan_digest(task))
    outside = steps_of(task)[1]
    approvals.step_gate(outside)
    assert Step.objects.get(pk=outside.pk).state == StepState.AWAITING_APPROVAL
    start = threading.Barrier(2)

    def approve(how: str) -> bool:
        step = Step.objects.select_related("task").get(pk=outside.pk)
        start.wait()
        try:
            approvals.step_approve(step, owner, how)
            return True
        except AgentError:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(approve, ["dashboard", "shell"]))

    assert sorted(outcomes) == [False, True]
    assert Approval.objects.filter(step=outside).count() == 1
    assert Step.objects.get(pk=outside.pk).state == StepState.APPROVED
    moves = AuditEvent.objects.filter(action="agent_step_moved", subject=outside.purpose)
    assert [event.detail for event in moves.order_by("pk")] == [
        "planned → awaiting_approval",
        "awaiting_approval → approved",
    ]


@pytest.mark.django_db(transaction=True)
def test_an_approval_and_a_cancellation_at_once_leave_one_consistent_outcome(
    member: Any,
) -> None:
    task = second_opinion(member)
    digest = services.plan_digest(task)
    start = threading.Barrier(2)

    def decide(which: str) -> bool:
        start.wait()
        try:
            if which == "approve":
                services.plan_approve(task, member, "dashboard", digest=digest)
                return True
            return services.task_cancel(task, member)
        except AgentError:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        approved, cancelled = pool.map(decide, ["approve", "cancel"])

    # Cancelling always wins in the end: either first, or after the approval.
    assert cancelled is True
    assert Task.objects.get(pk=task.pk).state == TaskState.CANCELLED
    assert Approval.objects.filter(task=task).count() == int(approved)
    assert {step.state for step in steps_of(task)} == {StepState.CANCELLED}
