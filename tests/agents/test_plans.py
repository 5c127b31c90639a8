"""A person edits, approves or rejects a plan; an edit narrows it, never widens it."""

from __future__ import annotations

from typing import Any

import pytest

from apps.agents import services
from apps.agents.models import Approval, Task
from apps.agents.services import AgentError, ChangeModel, LowerCost, MoveStep, RemoveStep
from apps.agents.states import StepState, TaskState
from apps.audit.models import AuditEvent
from tests.agents.conftest import LOCAL, steps_of, task_for


def _shape(task: Task) -> list[tuple[int, str, int, bool]]:
    return [(s.position, s.model, s.estimated_cost_msat, s.leaves_node) for s in steps_of(task)]


@pytest.mark.django_db
def test_the_asker_removes_reorders_changes_a_model_and_lowers_a_cost(
    planned: Task, member: Any
) -> None:
    local, acme, beta, compare = steps_of(planned)
    services.plan_edit(
        planned,
        member,
        [
            RemoveStep(local.pk),
            MoveStep(beta.pk, 1),
            ChangeModel(acme.pk, LOCAL),
            LowerCost(beta.pk, 30_000),
        ],
    )
    assert _shape(planned) == [
        (1, "beta/wise", 30_000, True),
        (2, LOCAL, 40_000, False),
        (3, LOCAL, 0, False),
    ]
    assert AuditEvent.objects.filter(action="agent_plan_edited").count() == 1


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        (lambda steps: LowerCost(steps[1].pk, 40_001), "only be lowered"),
        (lambda steps: ChangeModel(steps[0].pk, "acme/big"), "send data out"),
        (lambda steps: ChangeModel(steps[1].pk, "gamma/any"), "provider of 'gamma/any'"),
        (lambda steps: MoveStep(steps[1].pk, 5), "no position 5"),
        (lambda steps: RemoveStep(10**9), "not in this plan"),
    ],
)
@pytest.mark.django_db
def test_an_edit_that_would_widen_the_plan_is_refused_and_none_applies(
    planned: Task, member: Any, edit: Any, refusal: str
) -> None:
    before, digest = _shape(planned), services.plan_digest(planned)
    steps = steps_of(planned)
    with pytest.raises(AgentError, match=refusal):
        # A valid edit first: the refusal undoes it too.
        services.plan_edit(planned, member, [RemoveStep(steps[3].pk), edit(steps)])
    assert (_shape(planned), services.plan_digest(planned)) == (before, digest)


@pytest.mark.django_db
def test_moving_the_compare_step_before_the_answers_it_compares_is_refused(
    planned: Task, member: Any
) -> None:
    compare = steps_of(planned)[3]
    with pytest.raises(AgentError, match="Step 2 runs in an earlier group"):
        services.plan_edit(planned, member, [MoveStep(compare.pk, 1)])
    assert steps_of(planned)[3].pk == compare.pk


@pytest.mark.django_db
def test_a_plan_cannot_be_edited_to_nothing(planned: Task, member: Any) -> None:
    with pytest.raises(AgentError, match="at least one step"):
        services.plan_edit(planned, member, [RemoveStep(s.pk) for s in steps_of(planned)])
    assert len(steps_of(planned)) == 4


@pytest.mark.django_db
def test_approving_runs_the_plan_as_shown_and_keeps_the_approval_unspent(
    planned: Task, member: Any
) -> None:
    approval = services.plan_approve(
        planned, member, "dashboard", digest=services.plan_digest(planned)
    )
    planned.refresh_from_db()
    assert planned.state == TaskState.RUNNING
    assert (approval.approved, approval.how, approval.consumed_at) == (True, "dashboard", None)
    assert AuditEvent.objects.filter(
        action="agent_task_moved", detail="awaiting_plan_approval → running"
    ).exists()


@pytest.mark.django_db
def test_a_plan_edited_after_it_was_shown_is_not_approved(planned: Task, member: Any) -> None:
    shown = services.plan_digest(planned)
    services.plan_edit(planned, member, [LowerCost(steps_of(planned)[1].pk, 1_000)])
    with pytest.raises(AgentError, match="changed since it was shown"):
        services.plan_approve(planned, member, "dashboard", digest=shown)
    planned.refresh_from_db()
    assert planned.state == TaskState.AWAITING_PLAN_APPROVAL
    assert not Approval.objects.exists()


@pytest.mark.django_db
def test_an_approved_plan_is_not_edited_any_more(running: Task, member: Any) -> None:
    with pytest.raises(AgentError, match="no longer waiting"):
        services.plan_edit(running, member, [LowerCost(steps_of(running)[1].pk, 1)])
    assert steps_of(running)[1].estimated_cost_msat == 40_000


@pytest.mark.django_db
def test_only_the_asker_or_the_owner_decides_a_plan(planned: Task, friend: Any, owner: Any) -> None:
    digest = services.plan_digest(planned)
    with pytest.raises(AgentError, match="Only the person who asked"):
        services.plan_approve(planned, friend, "dashboard", digest=digest)
    services.plan_approve(planned, owner, "shell", digest=digest)
    planned.refresh_from_db()
    assert planned.state == TaskState.RUNNING


@pytest.mark.django_db
def test_a_rejected_plan_cancels_the_task_and_every_step(planned: Task, member: Any) -> None:
    rejection = services.plan_reject(planned, member, "dashboard")
    planned.refresh_from_db()
    assert (planned.state, rejection.approved) == (TaskState.CANCELLED, False)
    assert {s.state for s in steps_of(planned)} == {StepState.CANCELLED}


@pytest.mark.django_db
def test_a_task_is_cancelled_at_any_time_but_once(running: Task, member: Any) -> None:
    assert services.task_cancel(running, member) is True
    assert services.task_cancel(running, member) is False
    running.refresh_from_db()
    assert running.state == TaskState.CANCELLED
    assert {s.state for s in steps_of(running)} == {StepState.CANCELLED}


@pytest.mark.django_db
def test_someone_else_cannot_cancel_a_task(running: Task, friend: Any) -> None:
    with pytest.raises(AgentError):
        services.task_cancel(running, friend)
    running.refresh_from_db()
    assert running.state == TaskState.RUNNING


@pytest.mark.parametrize("how", ["rule", "telepathy"])
@pytest.mark.django_db
def test_a_person_decides_only_by_dashboard_dm_or_shell(
    planned: Task, member: Any, how: str
) -> None:
    with pytest.raises(AgentError, match="Unknown way to decide"):
        services.plan_approve(planned, member, how, digest=services.plan_digest(planned))
    planned.refresh_from_db()
    assert planned.state == TaskState.AWAITING_PLAN_APPROVAL


@pytest.mark.django_db
def test_the_audit_trail_names_the_task_never_its_goal(planned: Task) -> None:
    rows = AuditEvent.objects.filter(subject=planned.caller)
    assert {row.action for row in rows} >= {"agent_task_created", "agent_plan_made"}
    assert not AuditEvent.objects.filter(detail__contains="good idea").exists()


def test_a_member_cannot_raise_the_step_up_threshold_above_the_households(
    member: Any, owner: Any, settings: Any
) -> None:
    settings.AGENT_STEP_UP_SAT = 100
    with pytest.raises(services.AgentError, match="Only the owner"):
        task_for(member, step_up_threshold_msat=100_001)
    assert not Task.objects.exists()
    assert task_for(member, step_up_threshold_msat=100_000).pk
    assert task_for(owner, step_up_threshold_msat=900_000).pk
