"""`manage.py agents list|show|approve|cancel`: the owner decides from a shell. Every refusal
goes to standard error with exit code 1 and changes nothing; nothing secret is printed."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.agents import services
from apps.agents.approvals import step_gate, step_needs_approval
from apps.agents.execution import step_preview, step_request_id
from apps.agents.models import Approval, ApprovalRule, Step, Task
from apps.agents.services import OutsidePick
from apps.agents.states import StepState, TaskState
from apps.audit.models import AuditEvent
from apps.wallet.models import Payment
from tests.agents.conftest import LOCAL, POLICY, steps_of, task_for
from tests.privacy.household import MODEL as LAN_MODEL
from tests.providers.doubles.openai_shape import OpenAIShapedDouble

pytestmark = pytest.mark.django_db

PREIMAGE = "ab" * 32
GOAL_WITH_EMAIL = "Should I write to ada@example.org about {this}?"
PAYMENT_HASH = "cd" * 32


def agents(*argv: str) -> str:
    """What `manage.py agents ...` printed; a CommandError is raised as the shell shows it."""
    out = io.StringIO()
    call_command("agents", *argv, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*argv: str) -> str:
    with pytest.raises(CommandError) as error:
        agents(*argv)
    assert error.value.returncode == 1
    return str(error.value)


def _fresh(task: Task) -> Task:
    return Task.objects.get(pk=task.pk)


def _waiting(task: Task, position: int) -> Step:
    step = steps_of(task)[position - 1]
    assert step_gate(step).needed
    return Step.objects.get(pk=step.pk)


def _paid(step: Step) -> Payment:
    return Payment.objects.create(
        purpose=f"provider:acme:{step_request_id(step)}",
        label=f"label-{step.pk}",
        caller=step.task.caller,
        bolt11="lnbc1",
        payment_hash=PAYMENT_HASH,
        destination="02" + "00" * 32,
        amount_msat=21_000,
        max_fee_msat=1_000,
        fee_msat=12,
        state=Payment.State.COMPLETE,
        preimage=PREIMAGE,
        token_may_be_live=True,
    )


@pytest.fixture
def to_lan(member: Any, outside: OpenAIShapedDouble) -> Task:
    """A running second-opinion task whose outside steps go to the provider double `lan`
    (40 sat, and 60 sat: above the step-up threshold), its goal holding an email address."""
    task = services.task_create(
        member,
        GOAL_WITH_EMAIL,
        200_000,
        {**POLICY, "providers": ["lan"]},
    )
    picks = (OutsidePick(LAN_MODEL, 40_000), OutsidePick(LAN_MODEL, 60_000))
    services.plan_from_template(task, "second_opinion", local_model=LOCAL, outside=picks)
    services.plan_approve(task, member, "dashboard", digest=services.plan_digest(task))
    return _fresh(task)


# --- list and show ----------------------------------------------------------------------------


def test_list_shows_each_task_and_marks_its_waiting_steps(running: Task, member: Any) -> None:
    member.name = "Anna"
    member.save()
    draft = task_for(member, cap=5_000)
    _waiting(running, 2)

    lines = agents("list").splitlines()

    assert len(lines) == 2
    assert lines[0].startswith(f"{draft.pk}  draft  -  Anna  0 sat / 5 sat")
    assert lines[1].startswith(f"{running.pk}  awaiting_step_approval  second_opinion  Anna")
    assert "/ 200 sat" in lines[1] and lines[1].endswith("⏸ step 2 waits")


def test_list_filters_by_state_and_speaks_json(planned: Task, member: Any) -> None:
    task_for(member)

    listed = json.loads(agents("list", "--state", "awaiting_plan_approval", "--json"))

    assert [task["id"] for task in listed] == [planned.pk]
    assert listed[0]["asker"] == member.short_npub
    assert listed[0]["budget_cap_msat"] == 200_000 and listed[0]["waiting_steps"] == []
    assert agents("list", "--state", "done") == "No agent task done.\n"


def test_show_prints_the_policy_the_steps_and_why_one_waits(running: Task) -> None:
    _waiting(running, 3)

    printed = agents("show", str(running.pk))

    assert f"Task {running.pk}  awaiting_step_approval" in printed
    assert "goal: Is {this} a good idea?" in printed
    assert "approval above 10 sat, sign in again above 50 sat; data may leave" in printed
    assert "providers: acme, beta" in printed
    assert "3. model_call beta/wise  est. 60 sat  leaves the node" in printed
    assert "⏸ waits: sends data out; above the step-up threshold" in printed
    assert "1. model_call smollm2  est. 0 sat  stays on the node  group 1  planned" in printed


def test_show_gives_receipts_by_hash_never_the_preimage(running: Task) -> None:
    step = steps_of(running)[1]
    _paid(step)
    Step.objects.filter(pk=step.pk).update(result="An answer.\x1b[2J\x07 Done.")

    printed = agents("show", str(running.pk))
    shown = json.loads(agents("show", str(running.pk), "--json"))

    assert f"receipt: {PAYMENT_HASH}  21 sat + fee 0.012 sat" in printed
    assert "result: An answer.[2J Done." in printed  # no escape reaches the terminal
    assert PREIMAGE not in printed and PREIMAGE not in json.dumps(shown)
    receipts = shown["steps"][1]["receipts"]
    assert receipts == [{"payment_hash": PAYMENT_HASH, "amount_msat": 21_000, "fee_msat": 12}]


def test_show_of_an_unknown_task_is_refused() -> None:
    assert refused("show", "999") == "There is no agent task 999."


# --- approving and rejecting the plan -----------------------------------------------------------


def test_approve_prints_the_plan_then_approves_it_as_the_owner_by_shell(
    planned: Task, owner: Any
) -> None:
    printed = agents("approve", str(planned.pk))

    assert printed.index("4. model_call smollm2") < printed.index("Approved the plan")
    assert _fresh(planned).state == TaskState.RUNNING
    approval = Approval.objects.get(task=planned)
    assert (approval.by, approval.how, approval.approved) == (owner, "shell", True)
    assert approval.plan_digest == services.plan_digest(planned)


def test_a_plan_no_longer_waiting_is_refused_and_nothing_changes(running: Task) -> None:
    before = Approval.objects.count()

    message = refused("approve", str(running.pk))

    assert message == "The plan is no longer waiting for a decision."
    assert Approval.objects.count() == before and _fresh(running).state == TaskState.RUNNING


def test_reject_cancels_the_plan(planned: Task) -> None:
    printed = agents("approve", str(planned.pk), "--reject")

    assert printed == f"Rejected the plan of task {planned.pk}: it is cancelled.\n"
    assert _fresh(planned).state == TaskState.CANCELLED
    assert {step.state for step in steps_of(planned)} == {StepState.CANCELLED}


def test_a_rule_without_a_step_is_refused(planned: Task) -> None:
    assert "give --step N" in refused("approve", str(planned.pk), "--up-to-sat", "5")
    assert _fresh(planned).state == TaskState.AWAITING_PLAN_APPROVAL


# --- approving and rejecting a step -------------------------------------------------------------


def test_approve_a_step_prints_what_would_leave_and_binds_the_approval_to_it(
    to_lan: Task, owner: Any, outside: OpenAIShapedDouble
) -> None:
    lan = _waiting(to_lan, 2)

    printed = agents("approve", str(to_lan.pk), "--step", "2")

    assert printed.startswith("Step 2 would send to lan (taken out: email 1):\n")
    assert "Should I write to [EMAIL_1] about {this}?" in printed
    assert "ada@example.org" not in printed
    assert printed.endswith(f"Approved step 2 of task {to_lan.pk}.\n")
    lan.refresh_from_db()
    assert lan.state == StepState.APPROVED
    approval = Approval.objects.get(step=lan)
    assert (approval.how, approval.by, approval.rule) == ("shell", owner, None)
    preview = step_preview(Step.objects.select_related("task").get(pk=lan.pk))
    assert approval.leaving_digest == preview.digest != ""
    assert outside.requests == []  # shown, not sent


def test_the_shell_is_a_fresh_sign_in_above_the_step_up_threshold(to_lan: Task) -> None:
    third = _waiting(to_lan, 3)
    assert step_needs_approval(third).step_up

    agents("approve", str(to_lan.pk), "--step", "3")

    third.refresh_from_db()
    assert third.state == StepState.APPROVED
    assert _fresh(to_lan).state == TaskState.RUNNING


def test_a_step_that_would_be_refused_is_not_approved(running: Task) -> None:
    acme = _waiting(running, 2)  # no provider acme on this node

    message = refused("approve", str(running.pk), "--step", "2")

    assert message.startswith("Step 2 would be refused: ")
    acme.refresh_from_db()
    assert acme.state == StepState.AWAITING_APPROVAL
    assert not Approval.objects.filter(step=acme).exists()


def test_approve_a_step_with_a_rule_for_steps_like_it(to_lan: Task) -> None:
    _waiting(to_lan, 2)

    printed = agents("approve", str(to_lan.pk), "--step", "2", "--up-to-sat", "45")

    assert printed.endswith("and steps like it up to 45 sat.\n")
    rule = ApprovalRule.objects.get(task=to_lan)
    assert (rule.kind, rule.target, rule.max_cost_msat) == ("model_call", LAN_MODEL, 45_000)


def test_a_rule_beyond_the_step_up_threshold_is_refused_and_the_step_still_waits(
    to_lan: Task,
) -> None:
    lan = _waiting(to_lan, 2)

    message = refused("approve", str(to_lan.pk), "--step", "2", "--up-to-sat", "51")

    assert message == "A rule cannot reach above the step-up threshold."
    lan.refresh_from_db()
    assert lan.state == StepState.AWAITING_APPROVAL
    assert not ApprovalRule.objects.exists() and not Approval.objects.filter(step=lan).exists()


def test_reject_a_step_fails_the_task(running: Task) -> None:
    _waiting(running, 2)

    agents("approve", str(running.pk), "--step", "2", "--reject")

    task = _fresh(running)
    assert (task.state, task.failure) == (TaskState.FAILED, "Step 2 was rejected.")


def test_a_step_not_waiting_or_not_there_is_refused(running: Task) -> None:
    assert refused("approve", str(running.pk), "--step", "1") == (
        "This step is not waiting for approval any more."
    )
    assert refused("approve", str(running.pk), "--step", "9") == f"Task {running.pk} has no step 9."
    assert steps_of(running)[0].state == StepState.PLANNED
    assert not Approval.objects.filter(released=Approval.Released.STEP).exists()


# --- cancelling ---------------------------------------------------------------------------------


def test_cancel_stops_the_task_and_a_second_cancel_is_refused(running: Task) -> None:
    assert agents("cancel", str(running.pk)) == (
        f"Cancelled task {running.pk}: nothing new is paid.\n"
    )
    assert _fresh(running).state == TaskState.CANCELLED
    moves = AuditEvent.objects.filter(action="agent_task_moved").count()

    assert refused("cancel", str(running.pk)) == f"Task {running.pk} has already ended (cancelled)."
    assert AuditEvent.objects.filter(action="agent_task_moved").count() == moves


def test_without_an_owner_the_shell_cannot_decide(planned: Task, owner: Any) -> None:
    owner.role = "member"
    owner.save()

    assert refused("approve", str(planned.pk)) == "This node has no owner yet: claim it first."
    assert _fresh(planned).state == TaskState.AWAITING_PLAN_APPROVAL
