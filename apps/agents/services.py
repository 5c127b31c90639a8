"""Agent tasks: create, plan, edit, approve, reject, cancel. Every refusal changes nothing.

An agent proposes and a person decides. A task is created in `draft`; a plan (from a template,
or proposed by a model, planner.py, and checked here as strictly: `plan_proposed`) moves it to
`awaiting_plan_approval`; the asker or the owner edits, approves or rejects it; nothing runs
before. While it runs, each step passes approvals.py's gate: one over the policy's threshold, or
one that sends data out, waits for the owner's approval unless a rule the owner set on this task
covers it. Approvals above the step-up threshold need a fresh login signature or the shell.

What comes next builds on these services and adds no rule of its own: thin Celery tasks that run
a task's steps in position order (consecutive steps of one parallel group together), each one
`step_gate`, then `step_start`, then the model call through the inference pipeline
(`AnswerRequest(origin=Origin.AGENT, price_shown_msat=step.estimated_cost_msat)`) or the paid
HTTP request, paid under `step.purpose` so a retried or resumed step never pays twice, the
executor checking the task still runs before each payment; expiry of tasks left waiting; DM
delivery of `code_issue`'s code and reading replies into `code_redeem`; the dashboard (with the
privacy preview of what each step would send) and `manage.py agents`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.agents.models import Approval, AuditAction, Step, Task
from apps.agents.states import (
    STEP_MOVES,
    TASK_FINAL,
    TASK_MOVES,
    StepState,
    TaskState,
    move,
)
from apps.agents.templates import TEMPLATES, Slot, StepTemplate
from apps.audit.services import audit_record
from apps.identity.models import Member, Role
from apps.wallet import budgets
from apps.wallet.models import Budget


class AgentError(Exception):
    """Refused, with a message for people; nothing was changed."""


@dataclass(frozen=True)
class Policy:
    """What a task may do. `providers`: the outside providers it may use (none: local only);
    `models`: the models it may use, empty meaning any the providers rule allows; `urls`: the
    addresses (each a prefix, e.g. `https://api.example.com/v1/`) its paid HTTP requests may
    ask."""

    approval_threshold_msat: int
    step_up_threshold_msat: int
    data_may_leave: bool = False
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        try:
            policy = cls(
                approval_threshold_msat=int(data["approval_threshold_msat"]),
                step_up_threshold_msat=int(data["step_up_threshold_msat"]),
                data_may_leave=bool(data.get("data_may_leave", False)),
                models=tuple(str(name) for name in data.get("models", ())),
                providers=tuple(str(name) for name in data.get("providers", ())),
                urls=tuple(str(url) for url in data.get("urls", ())),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise AgentError(f"The task's policy is incomplete or malformed ({error}).") from error
        if not 0 <= policy.approval_threshold_msat <= policy.step_up_threshold_msat:
            raise AgentError("Thresholds must be positive, the step-up one at least as high.")
        for url in policy.urls:
            _address_checked(url)
        return policy

    def to_json(self) -> dict[str, Any]:
        return {
            "approval_threshold_msat": self.approval_threshold_msat,
            "step_up_threshold_msat": self.step_up_threshold_msat,
            "data_may_leave": self.data_may_leave,
            "models": list(self.models),
            "providers": list(self.providers),
            "urls": list(self.urls),
        }

    def check_model(self, model: str) -> None:
        if self.models and model not in self.models:
            raise AgentError(f"The task's policy does not allow the model {model!r}.")
        if model.split("/", 1)[0] == ROUTES:
            # A route may fall back to providers the policy does not name.
            raise AgentError("An agent's step names a model, not a route.")
        if model_leaves_node(model):
            if not self.data_may_leave:
                raise AgentError("The task's policy keeps its data on this node.")
            if model.split("/", 1)[0] not in self.providers:
                raise AgentError(f"The task's policy does not allow the provider of {model!r}.")

    def check_url(self, url: str) -> None:
        """A paid HTTP request may ask only an address under one the policy lists."""
        if not self.data_may_leave:
            raise AgentError("The task's policy keeps its data on this node.")
        _address_checked(url)
        if not any(url.startswith(allowed) for allowed in self.urls):
            raise AgentError(f"The task's policy does not allow paid requests to {url!r}.")


ROUTES = "route"  # apps.providers.routing's prefix of a route's name


def _address_checked(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL_CHARS:
        raise AgentError(f"{url!r} is not an http or https address (of at most 400 characters).")


MAX_URL_CHARS = 400  # as Step.url and the egress record keep it


@dataclass(frozen=True)
class OutsidePick:
    model: str  # <provider>/<model id>
    estimated_cost_msat: int  # the most its step may spend: the quote, with room for fees


def model_leaves_node(model: str) -> bool:
    """Outside models are named <provider>/<model id>; local ones have no provider part."""
    return "/" in model


def actor_of(member: Member) -> str:
    return str(member.pubkey)


def task_moved(task: Task, source: str, target: str, actor: str, **fields: Any) -> bool:
    """One audited move of the task, in the caller's transaction."""
    moved = move(Task.objects.filter(pk=task.pk), TASK_MOVES, source, target, **fields)
    if moved:
        audit_record(
            AuditAction.TASK_MOVED, actor=actor, subject=task.caller, detail=f"{source} → {target}"
        )
    return moved


def step_moved(step: Step, source: str, target: str, actor: str, **fields: Any) -> bool:
    moved = move(Step.objects.filter(pk=step.pk), STEP_MOVES, source, target, **fields)
    if moved:
        audit_record(
            AuditAction.STEP_MOVED,
            actor=actor,
            subject=step.purpose,
            detail=f"{source} → {target}",
        )
    return moved


def task_create(
    asked_by: Member, goal: str, budget_cap_msat: int, policy: Policy | dict[str, Any]
) -> Task:
    """A draft task whose payments, as the wallet's caller `agent:<id>`, stay within its cap."""
    if not goal.strip():
        raise AgentError("A task needs a goal.")
    if budget_cap_msat < 0:
        raise AgentError("A budget cap cannot be negative.")
    # Checked however it came: a Policy built by a form is checked as one read from JSON.
    checked = Policy.from_json(policy.to_json() if isinstance(policy, Policy) else policy)
    ceiling = settings.AGENT_STEP_UP_SAT * 1000
    if asked_by.role != Role.OWNER and checked.step_up_threshold_msat > ceiling:
        raise AgentError(
            f"Only the owner may set the step-up threshold above {ceiling // 1000} sat."
        )
    with transaction.atomic():
        task = Task.objects.create(
            goal=goal, asked_by=asked_by, budget_cap_msat=budget_cap_msat, policy=checked.to_json()
        )
        # In all, not per period: a task's cap is never spent twice across months.
        budgets.budget_set("caller", "total", budget_cap_msat, caller=task.caller)
        audit_record(
            AuditAction.TASK_CREATED,
            actor=actor_of(asked_by),
            subject=task.caller,
            detail=f"cap {budget_cap_msat} msat",
        )
    return task


def policy_of(task: Task) -> Policy:
    return Policy.from_json(task.policy)


def plan_from_template(
    task: Task, name: str, *, local_model: str, outside: Sequence[OutsidePick] = ()
) -> list[Step]:
    """The template's steps for this task, each checked against its policy and all together
    within its cap; the task then waits for its plan to be approved."""
    template = TEMPLATES.get(name)
    if template is None:
        raise AgentError(f"There is no template {name!r}.")
    if len(outside) != template.outside_models:
        raise AgentError(f"{template.title} needs {template.outside_models} outside models.")
    if model_leaves_node(local_model):
        raise AgentError(f"{local_model!r} is not a local model.")
    steps = _steps_from_template(task, template.steps, local_model, outside)
    return _plan_save(task, steps, template=name, detail=f"{name}: {len(steps)} steps")


@dataclass(frozen=True)
class ProposedStep:
    """One step of a plan a model proposed: untrusted data until `plan_proposed` checked it.
    `leaves_node` is what the proposal claims, if anything: never believed, only compared."""

    kind: str
    model: str
    url: str
    prompt: str
    parallel_group: int
    takes_answers: bool
    estimated_cost_msat: int
    leaves_node: bool | None = None


MAX_PROPOSED_STEPS = 6
MAX_PROMPT_CHARS = 4000


def plan_proposed(task: Task, proposed: Sequence[ProposedStep], *, by_model: str) -> list[Step]:
    """A plan `by_model` proposed for this task, checked as strictly as a template's (the
    policy's models, the cap) and more: at most MAX_PROPOSED_STEPS model calls, whether each
    sends data out worked out from its model's name; the task then waits for its approval."""
    if not proposed:
        raise AgentError("The proposed plan has no step.")
    if len(proposed) > MAX_PROPOSED_STEPS:
        raise AgentError(f"The proposed plan has more than {MAX_PROPOSED_STEPS} steps.")
    steps = [_proposed_step(task, position, one) for position, one in enumerate(proposed, 1)]
    detail = f"proposed by {by_model}: {len(steps)} steps"
    return _plan_save(task, steps, template="", detail=detail)


def _proposed_step(task: Task, position: int, proposed: ProposedStep) -> Step:
    where = f"Step {position} of the proposed plan"
    if proposed.kind not in Step.Kind.values:
        raise AgentError(f"{where} is of an unknown kind.")
    http = proposed.kind == Step.Kind.PAID_HTTP
    if http and proposed.model:
        raise AgentError(f"{where} is a paid HTTP request naming a model.")
    leaves = http or model_leaves_node(proposed.model)
    if proposed.leaves_node is not None and proposed.leaves_node != leaves:
        raise AgentError(f"{where} misstates whether its data leaves this node.")
    if not proposed.prompt.strip() or len(proposed.prompt) > MAX_PROMPT_CHARS:
        raise AgentError(f"{where} needs a prompt of at most {MAX_PROMPT_CHARS} characters.")
    if not 1 <= proposed.parallel_group <= MAX_PROPOSED_STEPS:
        raise AgentError(f"{where} has a parallel group out of range.")
    return Step(
        task=task,
        position=position,
        kind=proposed.kind,
        model=proposed.model,
        url=proposed.url if http else "",
        prompt=proposed.prompt,
        takes_answers=proposed.takes_answers,
        estimated_cost_msat=proposed.estimated_cost_msat,
        leaves_node=leaves,
        parallel_group=proposed.parallel_group,
    )


def _plan_save(task: Task, steps: list[Step], *, template: str, detail: str) -> list[Step]:
    """Check every step against the task's policy and all together against its cap, then save
    them and move the draft task to wait for its plan's approval, in one audited transaction."""
    policy = policy_of(task)
    for step in steps:
        _step_checked(policy, step)
    order_checked(steps)
    if sum(step.estimated_cost_msat for step in steps) > task.budget_cap_msat:
        raise AgentError("The plan's estimated cost is above the task's budget cap.")
    with transaction.atomic():
        if not task_moved(
            task, TaskState.DRAFT, TaskState.AWAITING_PLAN_APPROVAL, actor_of(task.asked_by)
        ):
            raise AgentError("Only a draft task can be given a plan.")
        saved = Step.objects.bulk_create(steps)
        Task.objects.filter(pk=task.pk).update(template=template)
        audit_record(AuditAction.PLAN_MADE, subject=task.caller, detail=detail)
    return saved


def _step_checked(policy: Policy, step: Step) -> None:
    if step.kind == Step.Kind.PAID_HTTP:
        policy.check_url(step.url)
        leaves = True  # the address itself leaves, and the answer is paid for
    else:
        policy.check_model(step.model)
        leaves = model_leaves_node(step.model)
    if step.leaves_node != leaves:
        raise AgentError(f"Step {step.position} misstates whether its data leaves this node.")
    if step.estimated_cost_msat < 0:
        raise AgentError("A step's estimated cost cannot be negative.")


def order_checked(steps: Sequence[Step]) -> None:
    """Steps in position order: parallel groups never go back, so steps run together only
    when they are next to each other. (A step that takes answers is given those of the groups
    before its own, all done by then, never a sibling's half-finished one.)"""
    for earlier, later in itertools.pairwise(steps):
        if later.parallel_group < earlier.parallel_group:
            raise AgentError(
                f"Step {later.position} runs in an earlier group than the step before it."
            )


def _steps_from_template(
    task: Task,
    templates: Sequence[StepTemplate],
    local_model: str,
    outside: Sequence[OutsidePick],
) -> list[Step]:
    steps: list[Step] = []
    for template in templates:
        picks = outside if template.slot == Slot.OUTSIDE else [OutsidePick(local_model, 0)]
        for pick in picks:
            steps.append(
                Step(
                    task=task,
                    position=len(steps) + 1,
                    kind=Step.Kind.MODEL_CALL,
                    model=pick.model,
                    # str.replace, not format: a goal may hold braces of its own.
                    prompt=template.prompt.replace("{goal}", task.goal),
                    takes_answers=template.takes_answers,
                    estimated_cost_msat=pick.estimated_cost_msat,
                    leaves_node=model_leaves_node(pick.model),
                    parallel_group=template.parallel_group,
                )
            )
    return steps


def plan_failed(task: Task, why: str) -> None:
    """A draft whose plan could not be made ends, cancelled, saying why; nothing ran."""
    with transaction.atomic():
        if task_moved(task, TaskState.DRAFT, TaskState.CANCELLED, task.caller, failure=why):
            cap_close(task)


def plan_digest(task: Task) -> str:
    """What a person approves: the plan exactly as they saw it."""
    steps = Step.objects.filter(task=task).order_by("position")
    shown = [
        [
            s.position,
            s.kind,
            s.model,
            s.url,
            s.prompt,
            s.takes_answers,
            s.estimated_cost_msat,
            s.leaves_node,
        ]
        for s in steps
    ]
    return hashlib.sha256(json.dumps(shown).encode()).hexdigest()


@dataclass(frozen=True)
class RemoveStep:
    step_id: int


@dataclass(frozen=True)
class MoveStep:
    step_id: int
    position: int  # 1 is first


@dataclass(frozen=True)
class ChangeModel:
    step_id: int
    model: str


@dataclass(frozen=True)
class LowerCost:
    step_id: int
    estimated_cost_msat: int


PlanEdit = RemoveStep | MoveStep | ChangeModel | LowerCost


PEOPLE_DECIDE_BY = frozenset({Approval.How.DASHBOARD, Approval.How.DM, Approval.How.SHELL})


def how_checked(how: str) -> str:
    """How a person decided: a rule decides only through the gate, never by being named."""
    if how not in PEOPLE_DECIDE_BY:
        raise AgentError(f"Unknown way to decide: {how!r}.")
    return how


def _may_decide_plan(task: Task, by: Member) -> None:
    if by.pk != task.asked_by_id and by.role != Role.OWNER:
        raise AgentError("Only the person who asked, or the owner, decides this plan.")


def _locked_awaiting_plan(task: Task) -> Task:
    """The task row, held until the transaction ends (PostgreSQL; SQLite's IMMEDIATE
    transactions serialise writers already), so an edit and an approval never interleave."""
    locked = Task.objects.select_for_update().get(pk=task.pk)
    if locked.state != TaskState.AWAITING_PLAN_APPROVAL:
        raise AgentError("The plan is no longer waiting for a decision.")
    return locked


def plan_edit(task: Task, by: Member, edits: Sequence[PlanEdit]) -> list[Step]:
    """Apply the edits all or none. An edit may narrow the plan, never widen it: a higher cost,
    a new step, or a step that would newly send data out needs a new plan."""
    _may_decide_plan(task, by)
    with transaction.atomic():
        locked = _locked_awaiting_plan(task)
        steps = {step.pk: step for step in Step.objects.filter(task=locked)}
        order = sorted(steps, key=lambda pk: steps[pk].position)
        for edit in edits:
            if edit.step_id not in order:
                raise AgentError(f"Step {edit.step_id} is not in this plan.")
            order = _edit_apply(locked, steps[edit.step_id], edit, order)
        if not order:
            raise AgentError("A plan needs at least one step; reject it instead.")
        order_checked(_renumbered(steps, order))
        Step.objects.filter(task=locked).exclude(pk__in=order).delete()
        _positions_save(steps, order)
        audit_record(
            AuditAction.PLAN_EDITED,
            actor=actor_of(by),
            subject=locked.caller,
            detail=f"{len(edits)} edits, {len(order)} steps left",
        )
    return list(Step.objects.filter(task=locked).order_by("position"))


def _edit_apply(task: Task, step: Step, edit: PlanEdit, order: list[int]) -> list[int]:
    if isinstance(edit, RemoveStep):
        return [pk for pk in order if pk != step.pk]
    if isinstance(edit, MoveStep):
        if not 1 <= edit.position <= len(order):
            raise AgentError(f"There is no position {edit.position} in this plan.")
        rest = [pk for pk in order if pk != step.pk]
        return [*rest[: edit.position - 1], step.pk, *rest[edit.position - 1 :]]
    if isinstance(edit, ChangeModel):
        _model_change(task, step, edit.model)
    else:
        if not 0 <= edit.estimated_cost_msat <= step.estimated_cost_msat:
            raise AgentError("A step's cost can only be lowered; a higher one needs a new plan.")
        step.estimated_cost_msat = edit.estimated_cost_msat
    return order


def _model_change(task: Task, step: Step, model: str) -> None:
    if step.kind != Step.Kind.MODEL_CALL:
        raise AgentError("Only a model call's model can be changed.")
    policy_of(task).check_model(model)
    if model_leaves_node(model) and not step.leaves_node:
        raise AgentError("That model would send data out from a local step; ask for a new plan.")
    step.model = model
    step.leaves_node = model_leaves_node(model)


def _renumbered(steps: dict[int, Step], order: list[int]) -> list[Step]:
    """The steps as the edits leave them, at their new positions (unsaved copies)."""
    return [
        Step(
            position=position,
            parallel_group=steps[pk].parallel_group,
            takes_answers=steps[pk].takes_answers,
        )
        for position, pk in enumerate(order, start=1)
    ]


def _positions_save(steps: dict[int, Step], order: list[int]) -> None:
    # Two passes: positions are unique within a task at every moment of the UPDATEs.
    offset = len(steps) + 1
    for position, pk in enumerate(order, start=1):
        Step.objects.filter(pk=pk).update(position=offset + position)
    for position, pk in enumerate(order, start=1):
        step = steps[pk]
        Step.objects.filter(pk=pk).update(
            position=position,
            model=step.model,
            leaves_node=step.leaves_node,
            estimated_cost_msat=step.estimated_cost_msat,
            updated_at=timezone.now(),
        )


def plan_approve(task: Task, by: Member, how: str, *, digest: str) -> Approval:
    """Approve the plan `by` was shown (`digest`): a plan edited since is not approved."""
    how_checked(how)
    _may_decide_plan(task, by)
    with transaction.atomic():
        locked = _locked_awaiting_plan(task)
        if not hmac.compare_digest(digest, plan_digest(locked)):
            raise AgentError("The plan changed since it was shown; look at it again.")
        task_moved(locked, TaskState.AWAITING_PLAN_APPROVAL, TaskState.RUNNING, actor_of(by))
        approval = Approval.objects.create(
            task=locked,
            released=Approval.Released.PLAN,
            approved=True,
            by=by,
            how=how,
            plan_digest=digest,
        )
        audit_record(AuditAction.PLAN_APPROVED, actor=actor_of(by), subject=task.caller, detail=how)
        kick(task.pk)
    return approval


def plan_reject(task: Task, by: Member, how: str) -> Approval:
    how_checked(how)
    _may_decide_plan(task, by)
    with transaction.atomic():
        locked = _locked_awaiting_plan(task)
        task_moved(
            locked,
            TaskState.AWAITING_PLAN_APPROVAL,
            TaskState.CANCELLED,
            actor_of(by),
            failure="The plan was rejected.",
        )
        steps_cancel(locked, actor_of(by))
        cap_close(locked)
        approval = Approval.objects.create(
            task=locked, released=Approval.Released.PLAN, approved=False, by=by, how=how
        )
        audit_record(AuditAction.PLAN_REJECTED, actor=actor_of(by), subject=task.caller, detail=how)
    return approval


UNFINISHED = (StepState.PLANNED, StepState.AWAITING_APPROVAL, StepState.APPROVED)


def steps_cancel(task: Task, actor: str) -> None:
    """Steps not started never will be; a running one finishes, and pays nothing new because
    its payment is keyed by the step and the executor checks the task before paying. In the
    caller's transaction: the one way every stop of a task (rejected, failed, expired,
    cancelled) ends its unfinished steps."""
    for step in Step.objects.filter(task=task, state__in=UNFINISHED):
        step_moved(step, step.state, StepState.CANCELLED, actor)


def spent_msat(task: Task) -> int:
    """What the task's payments commit now (pending ones at their most)."""
    return budgets.committed(budgets.caller_scope(task.caller), None)


def cap_close(task: Task) -> None:
    """A task that ended pays nothing new: its cap (created if it was missing) becomes 0 in
    all, so no payment can be reserved however pending ones settle later; what it spent stays
    in the wallet's journal (`spent_msat`). In the caller's transaction."""
    budgets.budget_set(Budget.Scope.CALLER, Budget.Period.TOTAL, 0, caller=task.caller)


def kick(task_id: int) -> None:
    """Once the caller's transaction commits, have a worker look at the task."""
    from apps.agents import tasks

    transaction.on_commit(lambda: tasks.advance.delay(task_id))


def task_cancel(task: Task, by: Member) -> bool:
    """Cancel from any state not final: steps not started never will, a running one is stopped
    by its worker, and the cap closes, so nothing new is paid. False
    when it had already ended."""
    if by.pk != task.asked_by_id and by.role != Role.OWNER:
        raise AgentError("Only the person who asked, or the owner, can cancel this task.")
    with transaction.atomic():
        while True:
            state = Task.objects.values_list("state", flat=True).get(pk=task.pk)
            if state in TASK_FINAL:
                return False
            if task_moved(task, state, TaskState.CANCELLED, actor_of(by), failure="Cancelled."):
                steps_cancel(task, actor_of(by))
                cap_close(task)
                from apps.agents.execution import spent_record  # execution imports this module

                spent_record(task.pk)
                return True
