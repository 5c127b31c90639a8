"""Steps over the threshold or leaving the node wait for the owner; rules and DM codes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db.models import QuerySet
from django.utils import timezone

from apps.agents import approvals, execution, services
from apps.agents.approvals import code_issue, code_redeem, step_approve, step_gate, step_start
from apps.agents.models import Approval, ApprovalCode, Step, Task
from apps.agents.services import AgentError, LowerCost
from apps.agents.states import StepState, TaskState
from apps.audit.models import AuditEvent
from apps.inference import pipeline
from apps.inference.backends.base import Failed, RefusalCode
from apps.providers.models import Provider
from apps.wallet.models import Budget
from tests.agents.conftest import LOCAL, OUTSIDE, POLICY, second_opinion, steps_of
from tests.agents.outside import outside_rows
from tests.conftest import PERSONA_KEYS


@pytest.fixture(autouse=True)
def outside(db: None) -> None:
    """The outside models the plans call, so what their steps would send can be shown."""
    outside_rows()


def _fresh(step: Step) -> Step:
    return Step.objects.select_related("task").get(pk=step.pk)


def _acme_step(task: Task, position: int, cost: int) -> Step:
    return Step.objects.create(
        task=task,
        position=position,
        kind=Step.Kind.MODEL_CALL,
        model="acme/big",
        prompt="p",
        estimated_cost_msat=cost,
        leaves_node=True,
        parallel_group=3,
    )


def _waiting(task: Task, position: int) -> Step:
    step = steps_of(task)[position - 1]
    assert step_gate(step).needed
    return _fresh(step)


@pytest.mark.django_db
def test_a_local_step_within_the_threshold_goes_on(running: Task) -> None:
    local = steps_of(running)[0]
    gate = step_gate(local)
    assert (gate.needed, gate.reason) == (False, "within the policy")
    assert step_start(_fresh(local)) is True


@pytest.mark.django_db
def test_a_step_sending_data_out_waits_and_so_does_its_task(running: Task) -> None:
    acme = _waiting(running, 2)
    assert acme.state == StepState.AWAITING_APPROVAL
    running.refresh_from_db()
    assert running.state == TaskState.AWAITING_STEP_APPROVAL
    assert step_start(acme) is False


@pytest.mark.django_db
def test_an_approval_stays_recorded_until_its_step_starts(running: Task, owner: Any) -> None:
    acme = _waiting(running, 2)
    approval = step_approve(acme, owner, "dashboard")
    running.refresh_from_db()
    assert running.state == TaskState.RUNNING
    approval.refresh_from_db()
    assert approval.consumed_at is None  # no worker has started it yet: still owed
    assert step_start(_fresh(acme)) is True
    assert step_start(_fresh(acme)) is False  # started once
    approval.refresh_from_db()
    assert approval.consumed_at is not None
    assert _fresh(acme).attempts == 1
    plan = Approval.objects.get(released=Approval.Released.PLAN)
    assert plan.consumed_at is not None


@pytest.mark.django_db
def test_a_member_cannot_approve_a_step(running: Task, member: Any) -> None:
    acme = _waiting(running, 2)
    with pytest.raises(AgentError, match="Only the owner"):
        step_approve(acme, member, "dashboard")
    assert _fresh(acme).state == StepState.AWAITING_APPROVAL


@pytest.mark.parametrize(
    ("how", "stepped_up", "allowed"),
    [
        ("dm", False, False),
        ("dm", True, False),
        ("dashboard", False, False),
        ("dashboard", True, True),
        ("shell", False, True),
    ],
)
@pytest.mark.django_db
def test_above_the_step_up_threshold_only_a_fresh_signature_or_the_shell_approves(
    running: Task, owner: Any, how: str, stepped_up: bool, allowed: bool
) -> None:
    beta = _waiting(running, 3)  # 60,000 msat, above the step-up threshold of 50,000
    assert approvals.step_needs_approval(beta).step_up
    if allowed:
        step_approve(beta, owner, how, stepped_up=stepped_up)
    else:
        with pytest.raises(AgentError, match="sign in again"):
            step_approve(beta, owner, how, stepped_up=stepped_up)
    expected = StepState.APPROVED if allowed else StepState.AWAITING_APPROVAL
    assert _fresh(beta).state == expected


@pytest.mark.django_db
def test_a_rejected_step_fails_the_task_and_nothing_else_starts(running: Task, owner: Any) -> None:
    acme = _waiting(running, 2)
    approvals.step_reject(acme, owner, "dashboard")
    running.refresh_from_db()
    assert (running.state, running.failure) == (TaskState.FAILED, "Step 2 was rejected.")
    assert [s.state for s in steps_of(running)] == [
        StepState.CANCELLED,
        StepState.REJECTED,
        StepState.CANCELLED,
        StepState.CANCELLED,
    ]


@pytest.mark.django_db
def test_a_rule_releases_steps_like_this_one_in_this_task_only(member: Any, owner: Any) -> None:
    task = second_opinion(member)
    services.plan_edit(task, member, [LowerCost(steps_of(task)[2].pk, 40_000)])
    services.plan_approve(task, member, "dashboard", digest=services.plan_digest(task))
    other = second_opinion(member)
    services.plan_approve(other, member, "dashboard", digest=services.plan_digest(other))

    step_approve(_waiting(task, 2), owner, "dashboard", rule_up_to_msat=45_000)

    # Another model, in the same task, is not "like this one".
    assert step_needs_approval_of(task, 3).needed
    # The same model in another task is not covered either.
    assert step_needs_approval_of(other, 2).needed


def step_needs_approval_of(task: Task, position: int) -> approvals.Gate:
    return approvals.step_needs_approval(_fresh(steps_of(task)[position - 1]))


@pytest.mark.django_db
def test_a_rule_covers_a_later_step_with_the_same_target_and_records_it(
    running: Task, owner: Any
) -> None:
    acme = _waiting(running, 2)
    step_approve(acme, owner, "dashboard", rule_up_to_msat=45_000)
    later = _acme_step(running, 5, 45_000)
    gate = step_gate(_fresh(later))
    assert (gate.needed, gate.reason) == (False, "covered by a rule")
    assert Approval.objects.get(step=later).how == Approval.How.RULE
    dearer = _acme_step(running, 6, 45_001)
    assert step_gate(_fresh(dearer)).needed


@pytest.mark.parametrize(
    ("up_to", "refusal"),
    [
        (50_001, "above the step-up threshold"),
        (-1, "cannot be negative"),
    ],
)
@pytest.mark.django_db
def test_a_rule_never_reaches_past_its_task(
    running: Task, owner: Any, up_to: int, refusal: str
) -> None:
    acme = _waiting(running, 2)
    with pytest.raises(AgentError, match=refusal):
        step_approve(acme, owner, "dashboard", rule_up_to_msat=up_to)
    assert _fresh(acme).state == StepState.AWAITING_APPROVAL  # the approval went with it
    assert not Approval.objects.filter(step=acme).exists()


@pytest.mark.django_db
def test_a_rule_cannot_allow_more_than_the_cap(member: Any, owner: Any) -> None:
    task = second_opinion(member, step_up_threshold_msat=500_000)
    services.plan_approve(task, member, "dashboard", digest=services.plan_digest(task))
    with pytest.raises(AgentError, match="budget cap"):
        step_approve(_waiting(task, 2), owner, "dashboard", rule_up_to_msat=200_001)


@pytest.mark.django_db
def test_a_dm_code_is_stored_only_as_a_hash_and_approves_once(running: Task, owner: Any) -> None:
    acme = _waiting(running, 2)
    code = code_issue(acme, owner)
    stored = ApprovalCode.objects.get()
    assert code not in stored.code_hash and len(stored.code_hash) == 64
    assert not AuditEvent.objects.filter(detail__contains=code).exists()

    approval = code_redeem(owner.pubkey, f"  {code.lower()} ")
    assert approval is not None and approval.how == Approval.How.DM
    assert _fresh(acme).state == StepState.APPROVED
    assert code_redeem(owner.pubkey, code) is None  # replayed
    assert Approval.objects.filter(step=acme).count() == 1


@pytest.mark.django_db
def test_no_and_the_code_rejects(running: Task, owner: Any) -> None:
    acme = _waiting(running, 2)
    code = code_issue(acme, owner)
    rejection = code_redeem(owner.pubkey, f"no {code}")
    assert rejection is not None and rejection.approved is False
    assert _fresh(acme).state == StepState.REJECTED


@pytest.mark.parametrize("reply", ["wrong", "", "yes please", "no"])
@pytest.mark.django_db
def test_a_wrong_reply_changes_nothing_and_is_audited(
    running: Task, owner: Any, reply: str
) -> None:
    acme = _waiting(running, 2)
    code_issue(acme, owner)
    assert code_redeem(owner.pubkey, reply) is None
    assert _fresh(acme).state == StepState.AWAITING_APPROVAL
    assert ApprovalCode.objects.get().used_at is None
    assert AuditEvent.objects.filter(action="agent_code_refused").count() == 1


@pytest.mark.django_db
def test_a_code_from_another_key_changes_nothing(running: Task, owner: Any) -> None:
    acme = _waiting(running, 2)
    code = code_issue(acme, owner)
    assert code_redeem(PERSONA_KEYS["stranger"].public_key().to_hex(), code) is None
    assert _fresh(acme).state == StepState.AWAITING_APPROVAL
    assert code_redeem(owner.pubkey, code) is not None  # still the owner's to use


@pytest.mark.django_db
def test_an_expired_code_changes_nothing(running: Task, owner: Any) -> None:
    acme = _waiting(running, 2)
    code = code_issue(acme, owner)
    ApprovalCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert code_redeem(owner.pubkey, code) is None
    assert _fresh(acme).state == StepState.AWAITING_APPROVAL


@pytest.mark.django_db
def test_a_dm_cannot_step_up_and_its_code_stays_unused(running: Task, owner: Any) -> None:
    beta = _waiting(running, 3)
    code = code_issue(beta, owner)
    assert code_redeem(owner.pubkey, code) is None
    assert _fresh(beta).state == StepState.AWAITING_APPROVAL
    assert ApprovalCode.objects.get().used_at is None


# --- what a DM approval lets leave ----------------------------------------------------------


def _research(member: Any) -> Task:
    """A running research-and-summarise task whose first (local) step is done: its outside
    steps take that answer as their material."""
    task = services.task_create(member, "Is {this} a good idea?", 200_000, POLICY)
    services.plan_from_template(task, "research_and_summarise", local_model=LOCAL, outside=OUTSIDE)
    services.plan_approve(task, member, "dashboard", digest=services.plan_digest(task))
    Step.objects.filter(task=task, position=1).update(
        state=StepState.DONE, result="1. Cost\n2. Risks, write to alice@example.com"
    )
    return task


@pytest.mark.django_db
def test_a_dm_approval_lets_only_the_text_its_dm_described_leave(member: Any, owner: Any) -> None:
    task = _research(member)
    acme = _waiting(task, 2)
    assert acme.takes_answers and acme.leaves_node
    shown = execution.step_preview(acme)
    assert shown.outside and shown.digest and shown.found  # the address was found, and redacted

    code = code_issue(acme, owner)
    assert ApprovalCode.objects.get().leaving_digest == shown.digest
    approval = code_redeem(owner.pubkey, code)

    assert approval is not None and approval.leaving_digest == shown.digest
    assert approvals.leaving_digest_of(_fresh(acme)) == shown.digest
    # Were the material to change after the DM (text nobody saw), the step would send nothing.
    Step.objects.filter(task=task, position=1).update(result="Something else entirely.")
    request = execution.step_request(_fresh(acme), leaving_shown=shown.digest)
    _, end = pipeline.answer_sync(request)
    assert isinstance(end, Failed) and end.code == RefusalCode.PREVIEW_CHANGED


@pytest.mark.django_db
def test_no_code_is_issued_for_a_step_whose_preview_cannot_be_made(
    running: Task, owner: Any
) -> None:
    acme = _waiting(running, 2)
    Provider.objects.filter(name="acme").delete()

    with pytest.raises(AgentError, match="cannot be shown now"):
        code_issue(acme, owner)
    assert not ApprovalCode.objects.exists()


@pytest.mark.django_db
def test_a_code_for_a_step_sending_nothing_out_binds_nothing(running: Task, owner: Any) -> None:
    local = _fresh(steps_of(running)[0])
    Step.objects.filter(pk=local.pk).update(estimated_cost_msat=20_000)  # over the threshold
    local = _fresh(local)
    assert step_gate(local).needed
    code_issue(_fresh(local), owner)
    assert ApprovalCode.objects.get().leaving_digest == ""


# --- approvals and rejections racing the gate -----------------------------------------------


@pytest.mark.django_db
def test_a_rejection_fails_a_task_that_is_running(running: Task, owner: Any) -> None:
    acme = _waiting(running, 2)
    # A sibling's approval moved the task back to running meanwhile.
    Task.objects.filter(pk=running.pk).update(state=TaskState.RUNNING)

    approvals.step_reject(acme, owner, "dashboard")

    running.refresh_from_db()
    assert (running.state, running.failure) == (TaskState.FAILED, "Step 2 was rejected.")
    assert StepState.PLANNED not in [s.state for s in steps_of(running)]
    assert Budget.objects.get(caller=running.caller).limit_msat == 0


@pytest.mark.parametrize("decide", ["gate", "approve", "reject"])
@pytest.mark.django_db
def test_gates_and_decisions_hold_the_task_row(
    running: Task, owner: Any, decide: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL, sibling gates and approvals of one task take turns on its row (SQLite
    drops FOR UPDATE: what is checked here is that it is asked for, on the task)."""
    acme = _waiting(running, 2) if decide != "gate" else _fresh(steps_of(running)[1])
    locked: list[type] = []
    select_for_update = QuerySet.select_for_update

    def spied(self: QuerySet[Any], *args: Any, **kwargs: Any) -> QuerySet[Any]:
        locked.append(self.model)
        return select_for_update(self, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "select_for_update", spied)
    if decide == "gate":
        step_gate(acme)
    elif decide == "approve":
        step_approve(acme, owner, "dashboard")
    else:
        approvals.step_reject(acme, owner, "dashboard")
    assert locked and locked[0] is Task


# --- a rule set at approval -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_rule_releases_the_siblings_already_waiting_it_covers(running: Task, owner: Any) -> None:
    acme = _waiting(running, 2)
    sibling = _acme_step(running, 5, 30_000)
    dearer = _acme_step(running, 6, 45_000)
    assert step_gate(_fresh(sibling)).needed and step_gate(_fresh(dearer)).needed

    step_approve(acme, owner, "dashboard", rule_up_to_msat=40_000)

    assert _fresh(sibling).state == StepState.APPROVED
    released = Approval.objects.get(step=sibling)
    assert (released.how, released.by, released.rule) == (
        Approval.How.RULE,
        owner,
        Approval.objects.get(step=acme).rule,
    )
    assert _fresh(dearer).state == StepState.AWAITING_APPROVAL  # above the rule: still asks
    running.refresh_from_db()
    assert running.state == TaskState.AWAITING_STEP_APPROVAL

    step_approve(_fresh(dearer), owner, "dashboard")
    running.refresh_from_db()
    assert running.state == TaskState.RUNNING


@pytest.mark.django_db
def test_a_rule_releasing_the_last_waiting_sibling_lets_the_task_run(
    running: Task, owner: Any
) -> None:
    acme = _waiting(running, 2)
    sibling = _acme_step(running, 5, 30_000)
    assert step_gate(_fresh(sibling)).needed

    step_approve(acme, owner, "dashboard", rule_up_to_msat=40_000)

    assert _fresh(sibling).state == StepState.APPROVED
    running.refresh_from_db()
    assert running.state == TaskState.RUNNING


# --- a task's end -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_closing_a_cap_sets_it_to_nothing_in_all_even_when_it_was_missing(member: Any) -> None:
    task = services.task_create(member, "Is {this} a good idea?", 200_000, POLICY)
    Budget.objects.filter(caller=task.caller).delete()

    services.cap_close(task)

    cap = Budget.objects.get(caller=task.caller)
    assert (cap.scope, cap.period, cap.limit_msat) == ("caller", "total", 0)


@pytest.mark.django_db
def test_steps_cancel_ends_only_the_steps_not_started(running: Task) -> None:
    first, second, third, fourth = steps_of(running)
    Step.objects.filter(pk=first.pk).update(state=StepState.DONE)
    Step.objects.filter(pk=second.pk).update(state=StepState.RUNNING)
    Step.objects.filter(pk=third.pk).update(state=StepState.AWAITING_APPROVAL)

    services.steps_cancel(running, "test")

    assert [s.state for s in steps_of(running)] == [
        StepState.DONE,
        StepState.RUNNING,
        StepState.CANCELLED,
        StepState.CANCELLED,
    ]


def test_a_step_keeps_no_payment_purpose_of_its_own() -> None:
    # Its payments are keyed by the step (execution.step_request_id), in the wallet's journal.
    assert "payment_purpose" not in {field.name for field in Step._meta.get_fields()}
