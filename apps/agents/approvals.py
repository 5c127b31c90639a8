"""A running task's steps and the people who release them: gates, approvals, rules, DM codes.

`step_gate` decides, before a step starts, whether it may: within the policy, or covered by a
rule the owner set on this task, it goes on; otherwise it waits, and so does its task. The owner
approves or rejects a waiting step from the dashboard, the shell, or by replying to a Nostr DM
with the code `code_issue` made. An approval stays recorded until the step it released has
started (`step_start` consumes it), so one given while no worker runs is not lost.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.agents.models import Approval, ApprovalCode, ApprovalRule, AuditAction, Step, Task
from apps.agents.services import (
    AgentError,
    actor_of,
    cap_close,
    how_checked,
    kick,
    policy_of,
    step_moved,
    steps_cancel,
    task_moved,
)
from apps.agents.states import StepState, TaskState
from apps.audit.services import audit_record
from apps.identity.models import Member, Role

if TYPE_CHECKING:
    from apps.inference.pipeline import Preview

CODE_LIFETIME = timedelta(minutes=15)
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: easy to read off a phone
_CODE_LENGTH = 8


@dataclass(frozen=True)
class Gate:
    """Whether a step may start now, and why not."""

    needed: bool  # a person must approve it first
    step_up: bool  # and that approval needs a fresh login signature or the shell
    rule: ApprovalRule | None  # the rule that releases it without asking
    reason: str


def step_needs_approval(step: Step) -> Gate:
    """Whether this step must wait for a person, by the task's policy and rules."""
    policy = policy_of(step.task)
    cost = step.estimated_cost_msat
    step_up = cost > policy.step_up_threshold_msat
    if cost <= policy.approval_threshold_msat and not step.leaves_node:
        return Gate(needed=False, step_up=False, rule=None, reason="within the policy")
    rule = None if step_up else _rule_covering(step)
    if rule is not None:
        return Gate(needed=False, step_up=False, rule=rule, reason="covered by a rule")
    reason = "sends data out" if step.leaves_node else "costs more than the threshold"
    return Gate(needed=True, step_up=step_up, rule=None, reason=reason)


def _rule_covering(step: Step) -> ApprovalRule | None:
    return (
        ApprovalRule.objects.filter(
            task_id=step.task_id,
            kind=step.kind,
            target=step.target,
            max_cost_msat__gte=step.estimated_cost_msat,
        )
        .order_by("pk")
        .first()
    )


def step_gate(step: Step) -> Gate:
    """Before a planned step starts: hold it (and its task) for a person, or record the rule
    that released it. A step no longer planned is left as it is. The task's row is held
    meanwhile, so sibling gates and approvals of the same task take turns."""
    with transaction.atomic():
        _task_locked(step)
        gate = step_needs_approval(step)
        if gate.needed:
            if step_moved(step, StepState.PLANNED, StepState.AWAITING_APPROVAL, step.task.caller):
                task_moved(
                    step.task, TaskState.RUNNING, TaskState.AWAITING_STEP_APPROVAL, step.task.caller
                )
        elif gate.rule is not None and step_moved(
            step, StepState.PLANNED, StepState.APPROVED, step.task.caller
        ):
            _rule_approval(step, gate.rule)
    return gate


def _task_locked(step: Step) -> None:
    """Hold the step's task row until the transaction ends (PostgreSQL; SQLite's IMMEDIATE
    transactions serialise writers already)."""
    Task.objects.select_for_update().filter(pk=step.task_id).values_list("pk", flat=True).get()


def _rule_approval(step: Step, rule: ApprovalRule) -> Approval:
    return Approval.objects.create(
        task_id=step.task_id,
        step=step,
        released=Approval.Released.STEP,
        approved=True,
        by=rule.by,
        how=Approval.How.RULE,
        rule=rule,
    )


def _may_decide_step(step: Step, by: Member, how: str, stepped_up: bool) -> None:
    how_checked(how)
    if by.role != Role.OWNER:
        raise AgentError("Only the owner approves a task's steps.")
    if step_needs_approval(step).step_up:
        fresh = how == Approval.How.SHELL or (how == Approval.How.DASHBOARD and stepped_up)
        if not fresh:
            raise AgentError("This step costs more than the step-up threshold: sign in again.")


def step_approve(
    step: Step,
    by: Member,
    how: str,
    *,
    stepped_up: bool = False,
    rule_up_to_msat: int | None = None,
    leaving_digest: str = "",
) -> Approval:
    """Release a waiting step; with `rule_up_to_msat`, also steps like it in this task up to
    that cost; with `leaving_digest` (the privacy preview the approver saw), the step sends
    exactly that or nothing. Of two approvals at once, one wins and the other is refused."""
    _may_decide_step(step, by, how, stepped_up)
    task = step.task
    with transaction.atomic():
        _task_locked(step)
        if not step_moved(step, StepState.AWAITING_APPROVAL, StepState.APPROVED, actor_of(by)):
            raise AgentError("This step is not waiting for approval any more.")
        rule = None if rule_up_to_msat is None else _rule_add(step, by, rule_up_to_msat)
        approval = Approval.objects.create(
            task=task,
            step=step,
            released=Approval.Released.STEP,
            approved=True,
            by=by,
            how=how,
            rule=rule,
            leaving_digest=leaving_digest,
        )
        if rule is not None:
            _siblings_release(step)
        if not Step.objects.filter(task=task, state=StepState.AWAITING_APPROVAL).exists():
            task_moved(task, TaskState.AWAITING_STEP_APPROVAL, TaskState.RUNNING, actor_of(by))
        audit_record(
            AuditAction.STEP_APPROVED, actor=actor_of(by), subject=step.purpose, detail=how
        )
        kick(task.pk)
    return approval


def _siblings_release(step: Step) -> None:
    """The task's other waiting steps a rule now covers go on too, released by that rule."""
    waiting = Step.objects.filter(task_id=step.task_id, state=StepState.AWAITING_APPROVAL)
    for other in waiting.exclude(pk=step.pk).select_related("task"):
        gate = step_needs_approval(other)
        if gate.rule is not None and step_moved(
            other, StepState.AWAITING_APPROVAL, StepState.APPROVED, other.task.caller
        ):
            _rule_approval(other, gate.rule)


def _rule_add(step: Step, by: Member, up_to_msat: int) -> ApprovalRule:
    """A rule never reaches past its task: not above its cap, not above the step-up threshold
    (those need a fresh signature each time), never for another task or another target."""
    task = step.task
    if up_to_msat < 0:
        raise AgentError("A rule's limit cannot be negative.")
    if up_to_msat > task.budget_cap_msat:
        raise AgentError("A rule cannot allow more than the task's budget cap.")
    if up_to_msat > policy_of(task).step_up_threshold_msat:
        raise AgentError("A rule cannot reach above the step-up threshold.")
    rule = ApprovalRule.objects.create(
        task=task, kind=step.kind, target=step.target, max_cost_msat=up_to_msat, by=by
    )
    audit_record(
        AuditAction.RULE_ADDED,
        actor=actor_of(by),
        subject=task.caller,
        detail=f"{step.kind} up to {up_to_msat} msat",
    )
    return rule


def step_reject(step: Step, by: Member, how: str) -> Approval:
    """Refuse a waiting step: the task stops, failed, and its other steps never start."""
    how_checked(how)
    if by.role != Role.OWNER:
        raise AgentError("Only the owner rejects a task's steps.")
    task = step.task
    with transaction.atomic():
        _task_locked(step)
        if not step_moved(step, StepState.AWAITING_APPROVAL, StepState.REJECTED, actor_of(by)):
            raise AgentError("This step is not waiting for approval any more.")
        failure = f"Step {step.position} was rejected."
        for going in (TaskState.AWAITING_STEP_APPROVAL, TaskState.RUNNING):
            if task_moved(task, going, TaskState.FAILED, actor_of(by), failure=failure):
                break
        steps_cancel(task, actor_of(by))
        cap_close(task)
        _spent_record(task)
        approval = Approval.objects.create(
            task=task, step=step, released=Approval.Released.STEP, approved=False, by=by, how=how
        )
        audit_record(
            AuditAction.STEP_REJECTED, actor=actor_of(by), subject=step.purpose, detail=how
        )
    return approval


def _spent_record(task: Task) -> None:
    from apps.agents.execution import spent_record  # execution imports this module

    spent_record(task.pk)


def step_start(step: Step, *, lease_until: datetime | None = None) -> bool:
    """Mark the step started, once, while its task runs (held by this worker until
    `lease_until`); only now are the approvals that released it (and the plan's) consumed.
    False: it was not released, or the task stopped."""
    with transaction.atomic():
        if not Task.objects.filter(pk=step.task_id, state=TaskState.RUNNING).exists():
            return False
        source: str = StepState.APPROVED
        if not step_needs_approval(step).needed:
            current = Step.objects.values_list("state", flat=True).get(pk=step.pk)
            source = current if current in (StepState.PLANNED, StepState.APPROVED) else ""
        if not source or not step_moved(
            step,
            source,
            StepState.RUNNING,
            step.task.caller,
            attempts=F("attempts") + 1,
            lease_until=lease_until,
        ):
            return False
        released = Approval.objects.filter(task_id=step.task_id, approved=True, consumed_at=None)
        released.filter(step=step).update(consumed_at=timezone.now())
        released.filter(released=Approval.Released.PLAN).update(consumed_at=timezone.now())
    return True


def leaving_digest_of(step: Step) -> str | None:
    """The privacy preview's digest a person approved this step with; None when a rule
    released it (the rule's owner agreed to steps like it without seeing each)."""
    approval = Approval.objects.filter(step=step, approved=True).exclude(leaving_digest="").last()
    return None if approval is None else approval.leaving_digest


def _code_hash(code: str) -> str:
    # Keyed: a short code's plain hash could be reversed by trying every code.
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, code.strip().upper().encode(), hashlib.sha256).hexdigest()


def code_issue(step: Step, approver: Member, preview: Preview | None = None) -> str:
    """A single-use code for `approver` to approve this waiting step by DM; only its keyed hash
    is stored, with the digest of the privacy preview (`preview`, worked out here when not
    given) the DM describes: approving by the code lets the step send exactly that. The code
    itself is returned once, to be sent. Refused when what would leave cannot be shown."""
    if approver.role != Role.OWNER:
        raise AgentError("Only the owner approves a task's steps.")
    if step.state != StepState.AWAITING_APPROVAL:
        raise AgentError("This step is not waiting for approval.")
    shown = preview or leaving_preview(step)
    digest = shown.digest if shown is not None else ""
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))
    with transaction.atomic():
        ApprovalCode.objects.create(
            step=step,
            approver=approver,
            code_hash=_code_hash(code),
            leaving_digest=digest,
            expires_at=timezone.now() + CODE_LIFETIME,
        )
        audit_record(AuditAction.CODE_ISSUED, actor=actor_of(approver), subject=step.purpose)
    return code


def leaving_preview(step: Step) -> Preview | None:
    """What this model call would send out, as an approver is shown it (for a step taking
    answers, the earlier answers are done by the time it waits: its batch has come up); None
    for a step that sends no text out. AgentError when it cannot be worked out now: the step
    would be refused the same way when run."""
    from apps.agents.execution import step_preview  # execution imports this module
    from apps.inference.backends.base import AnswerRefused

    if step.kind != Step.Kind.MODEL_CALL or not step.leaves_node:
        return None
    try:
        return step_preview(step)
    except AnswerRefused as refusal:
        raise AgentError(f"What this step would send cannot be shown now: {refusal}") from refusal


def code_redeem(sender_pubkey: str, reply: str) -> Approval | None:
    """A DM reply from `sender_pubkey` (hex, as the relay's event gives it): `<code>`
    approves, `no <code>` rejects. Only the approver's own key, with a code not used and not
    expired, decides anything; anything else is audited and changes nothing. Returns the
    decision recorded, or None."""
    words = reply.split()
    approve = not (len(words) == 2 and words[0].lower() == "no")
    code = words[-1] if words and len(words) == (1 if approve else 2) else ""
    try:
        with transaction.atomic():
            approval = _code_spend(sender_pubkey, code, approve)
    except AgentError as refusal:
        audit_record(AuditAction.CODE_REFUSED, actor=sender_pubkey, detail=str(refusal))
        return None
    return approval


def _code_spend(sender_pubkey: str, code: str, approve: bool) -> Approval:
    found = ApprovalCode.objects.filter(code_hash=_code_hash(code)).select_related("approver")
    issued = found.first() if code else None
    if issued is None or issued.approver.pubkey != sender_pubkey:
        raise AgentError("No such code for this sender.")
    now = timezone.now()
    spent = ApprovalCode.objects.filter(pk=issued.pk, used_at=None, expires_at__gt=now).update(
        used_at=now
    )
    if not spent:
        raise AgentError("The code was used already or has expired.")
    step = Step.objects.select_related("task").get(pk=issued.step_id)
    if approve:
        return step_approve(
            step, issued.approver, Approval.How.DM, leaving_digest=issued.leaving_digest
        )
    return step_reject(step, issued.approver, Approval.How.DM)
