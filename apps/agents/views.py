"""The Agents pages: a member's tasks (the owner's: everyone's), a new task from a template, and
one task with its plan, its steps and its result. While the plan waits, the person who asked
(or the owner) edits, approves or rejects it; while a step waits, the owner sees exactly what
would leave the node and approves or rejects it (above the step-up threshold, with a fresh
signature of their key). Every decision goes through the services; a refusal changes nothing
and is said plainly. The pages update live (live.py, consumers.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.agents import approvals, execution, live, planner, services
from apps.agents.forms import MSAT_PER_SAT, Models, PlanEditForm, StepApproveForm, TaskForm
from apps.agents.models import Step, Task
from apps.agents.services import AgentError
from apps.agents.states import TASK_FINAL, StepState, TaskState
from apps.agents.templates import PROPOSED, TEMPLATES
from apps.identity import logins, nip98
from apps.identity import services as identity
from apps.identity.access import client_address, household_required, owner_required
from apps.identity.models import Member
from apps.identity.nip98 import AuthRefused
from apps.inference import pipeline
from apps.inference.backends.base import AnswerRefused

SHOWN = 100


def _member(request: HttpRequest) -> Member:
    return request.user  # type: ignore[return-value]


def _models(member: Member) -> Models:
    return Models.of(pipeline.choices_for(member, execution.MAX_TOKENS))


def _tasks_of(member: Member) -> QuerySet[Task]:
    tasks = Task.objects.select_related("asked_by").order_by("-created_at", "-pk")
    return tasks if member.is_owner else tasks.filter(asked_by=member)


def _task_for(member: Member, task_id: int) -> Task:
    """The task, if this person may see it: their own, or any for the owner (else 404, so a
    task's existence is not told to whoever guesses its number)."""
    task = _tasks_of(member).filter(pk=task_id).first()
    if task is None:
        raise Http404("No such task.")
    return task


# --- the list and a new task ------------------------------------------------------------------


@never_cache  # goals are what people wrote
@require_GET
@household_required
def tasks_page(request: HttpRequest) -> HttpResponse:
    member = _member(request)
    if request.GET.get("fragment"):
        return render(request, "agents/_tasks.html", _list_context(member))
    form = TaskForm(models=_models(member), may_set_thresholds=member.is_owner)
    return _list_page(request, form)


def _list_context(member: Member) -> dict[str, Any]:
    tasks = list(_tasks_of(member)[:SHOWN])
    for task in tasks:
        template = TEMPLATES.get(task.template)
        task.template_title = template.title if template else "none"  # type: ignore[attr-defined]
        task.spent_msat = services.spent_msat(task)  # type: ignore[attr-defined]
    waiting = Step.objects.filter(state=StepState.AWAITING_APPROVAL)
    return {
        "tasks": tasks,
        "steps_waiting": waiting.count() if member.is_owner else 0,
    }


def _list_page(request: HttpRequest, form: TaskForm, status: int = 200) -> HttpResponse:
    member = _member(request)
    context = {
        **_list_context(member),
        "form": form,
        "models": form.models,
        "template_list": [*TEMPLATES.values(), PROPOSED],
        "picked": form["outside"].value() or [],
    }
    return render(request, "agents/list.html", context, status=status)


@require_POST
@household_required
def task_new(request: HttpRequest) -> HttpResponse:
    member = _member(request)
    form = TaskForm(request.POST, models=_models(member), may_set_thresholds=member.is_owner)
    if not form.is_valid():
        return _list_page(request, form, status=400)
    try:
        task = _task_planned(member, form)
    except AgentError as refusal:
        form.add_error(None, str(refusal))
        return _list_page(request, form, status=400)
    live.task_changed(task.pk)
    return redirect("agents:task", task_id=task.pk)


def _task_planned(member: Member, form: TaskForm) -> Task:
    """The task and its plan, or neither: a refused plan leaves no draft behind."""
    data = form.cleaned_data
    with transaction.atomic():
        task = services.task_create(
            member, data["goal"], data["budget_sat"] * MSAT_PER_SAT, form.policy()
        )
        if data["result_by_dm"]:
            Task.objects.filter(pk=task.pk).update(result_by_dm=True)
        if data["template"] == PROPOSED.name:
            planner.plan_soon(task, data["local_model"])
            return task
        services.plan_from_template(
            task, data["template"], local_model=data["local_model"], outside=form.outside_picks()
        )
    return task


# --- one task ---------------------------------------------------------------------------------


@dataclass
class StepShown:
    """A step as the page shows it: with why it waits and what would leave, when it waits."""

    step: Step
    receipts: list[dict[str, Any]]
    reason: str = ""
    step_up: bool = False
    preview: pipeline.Preview | None = None
    refused: str = ""  # why nothing may be sent as it stands
    redacted: bool = False  # what leaves had private values replaced: placeholders marked
    models: tuple[str, ...] = ()  # what a waiting plan's step may be changed to
    editable: bool = False  # a waiting plan's step with something to change


@never_cache
@require_GET
@household_required
def task_page(request: HttpRequest, task_id: int) -> HttpResponse:
    task = _task_for(_member(request), task_id)
    return render(request, "agents/task.html", _task_context(request, task))


@never_cache
@require_GET
@household_required
def task_panel(request: HttpRequest, task_id: int) -> HttpResponse:
    """The task's panel alone: what a live page fetches again when the task changed."""
    task = _task_for(_member(request), task_id)
    return render(request, "agents/_task.html", _task_context(request, task))


def _task_context(request: HttpRequest, task: Task) -> dict[str, Any]:
    member = _member(request)
    planning = task.state == TaskState.AWAITING_PLAN_APPROVAL
    steps = list(Step.objects.filter(task=task).order_by("position"))
    choices = _step_models(member, task) if planning else ([], [])
    shown = [_step_shown(member, step, choices) for step in steps]
    for each in shown:
        each.editable = len(steps) > 1 or len(each.models) > 1 or each.step.estimated_cost_msat > 0
    return {
        "task": task,
        "policy": services.policy_of(task),
        "spent_msat": services.spent_msat(task),
        "template": TEMPLATES.get(task.template),
        "steps": shown,
        "planning": planning,
        "digest": services.plan_digest(task) if planning else "",
        "final": task.state in TASK_FINAL,
        "receipts": task.result_provenance.get("receipts", []),
        "is_owner": member.is_owner,
    }


def _step_models(member: Member, task: Task) -> tuple[list[str], list[str]]:
    """The local models, and the outside ones the task's policy allows."""
    policy = services.policy_of(task)
    models = _models(member)
    outside = [
        c.name for c in models.outside if c.owned_by in policy.providers and _allowed(policy, c)
    ]
    return [c.name for c in models.local], outside


def _allowed(policy: services.Policy, choice: pipeline.ModelChoice) -> bool:
    return not policy.models or choice.name in policy.models


def _step_shown(member: Member, step: Step, choices: tuple[list[str], list[str]]) -> StepShown:
    local, outside = choices
    shown = StepShown(step, step.provenance.get("receipts", []))
    shown.models = tuple(outside if step.leaves_node else local)
    if step.state == StepState.AWAITING_APPROVAL:
        gate = approvals.step_needs_approval(step)
        shown.reason, shown.step_up = gate.reason, gate.step_up
        if member.is_owner:
            try:
                shown.preview = execution.step_preview(step)
                shown.redacted = shown.preview.outside and not shown.preview.trusted
            except AnswerRefused as refusal:
                shown.refused = str(refusal)
    return shown


def _back(task_id: int) -> HttpResponse:
    return redirect("agents:task", task_id=task_id)


def _decided(request: HttpRequest, task: Task, done: str) -> HttpResponse:
    messages.success(request, done)
    live.task_changed(task.pk)
    return _back(task.pk)


def _refused(request: HttpRequest, task_id: int, refusal: Exception) -> HttpResponse:
    messages.error(request, f"Nothing was changed: {refusal}")
    return _back(task_id)


@require_POST
@household_required
def plan_edit(request: HttpRequest, task_id: int) -> HttpResponse:
    member = _member(request)
    task = _task_for(member, task_id)
    form = PlanEditForm(request.POST)
    if not form.is_valid():
        return _refused(request, task.pk, AgentError("That change to the plan is not complete."))
    try:
        services.plan_edit(task, member, [_edit_of(task, form.cleaned_data)])
    except AgentError as refusal:
        return _refused(request, task.pk, refusal)
    return _decided(request, task, "The plan was changed; look at it again before approving.")


def _edit_of(task: Task, data: dict[str, Any]) -> services.PlanEdit:
    step_id, action = data["step"], data["action"]
    if action == "remove":
        return services.RemoveStep(step_id)
    if action in ("up", "down"):
        step = Step.objects.filter(task=task, pk=step_id).first()
        if step is None:
            raise AgentError(f"Step {step_id} is not in this plan.")
        return services.MoveStep(step_id, step.position + (-1 if action == "up" else 1))
    if action == "model":
        return services.ChangeModel(step_id, data["model"])
    if data["cost_sat"] is None:
        raise AgentError("Give the step's new cost in sats.")
    return services.LowerCost(step_id, data["cost_sat"] * MSAT_PER_SAT)


@require_POST
@household_required
def plan_approve(request: HttpRequest, task_id: int) -> HttpResponse:
    member = _member(request)
    task = _task_for(member, task_id)
    try:
        services.plan_approve(task, member, "dashboard", digest=request.POST.get("digest", "")[:64])
    except AgentError as refusal:
        return _refused(request, task.pk, refusal)
    return _decided(request, task, "The plan is approved: the task runs.")


@require_POST
@household_required
def plan_reject(request: HttpRequest, task_id: int) -> HttpResponse:
    member = _member(request)
    task = _task_for(member, task_id)
    try:
        services.plan_reject(task, member, "dashboard")
    except AgentError as refusal:
        return _refused(request, task.pk, refusal)
    return _decided(request, task, "The plan was rejected; nothing ran.")


@require_POST
@household_required
def task_cancel(request: HttpRequest, task_id: int) -> HttpResponse:
    member = _member(request)
    task = _task_for(member, task_id)
    try:
        cancelled = services.task_cancel(task, member)
    except AgentError as refusal:
        return _refused(request, task.pk, refusal)
    if not cancelled:
        return _refused(request, task.pk, AgentError("The task had already ended."))
    return _decided(request, task, "The task is cancelled; nothing new will be paid.")


# --- a waiting step -----------------------------------------------------------------------------


def _waiting_step(member: Member, step_id: int) -> Step:
    step = Step.objects.select_related("task").filter(pk=step_id).first()
    if step is None:
        raise Http404("No such step.")
    _task_for(member, step.task_id)
    return step


@require_POST
@owner_required
def step_approve(request: HttpRequest, step_id: int) -> HttpResponse:
    owner = _member(request)
    step = _waiting_step(owner, step_id)
    form = StepApproveForm(request.POST)
    if not form.is_valid():
        return _refused(request, step.task_id, AgentError("The approval form is not complete."))
    data = form.cleaned_data
    rule = data["rule_up_to_sat"]
    try:
        stepped_up = _signed_again(request, owner, data["signed_event"])
        approvals.step_approve(
            step,
            owner,
            "dashboard",
            stepped_up=stepped_up,
            rule_up_to_msat=None if rule is None else rule * MSAT_PER_SAT,
            leaving_digest=data["leaving_digest"] or "",
        )
    except (AgentError, AuthRefused) as refusal:
        return _refused(request, step.task_id, refusal)
    return _decided(request, step.task, f"Step {step.position} is approved.")


def _signed_again(request: HttpRequest, owner: Member, event_json: str) -> bool:
    """A fresh login signature by the owner's own key, addressed to this approval: a NIP-98
    event with a challenge the node issued, used once. False when none was sent."""
    if not event_json:
        return False
    urls = identity.login_urls(request.path)
    signed = nip98.verify(event_json, urls=urls, method="POST", body=b"", now=int(time.time()))
    if signed.pubkey != owner.pubkey:
        raise AuthRefused("The signature is not by your key.")
    with transaction.atomic():
        logins.challenge_consume(signed.challenge)
        identity.event_remember(signed.event_id, signed.created_at)
    return True


@require_POST
@owner_required
def step_reject(request: HttpRequest, step_id: int) -> HttpResponse:
    owner = _member(request)
    step = _waiting_step(owner, step_id)
    try:
        approvals.step_reject(step, owner, "dashboard")
    except AgentError as refusal:
        return _refused(request, step.task_id, refusal)
    return _decided(request, step.task, f"Step {step.position} was rejected; the task stopped.")


@never_cache
@require_POST
@owner_required
def step_challenge(request: HttpRequest, step_id: int) -> JsonResponse:
    """A challenge to sign with the owner's key, for approving this step above the step-up
    threshold; the signed event goes with the approval."""
    step = _waiting_step(_member(request), step_id)
    client = client_address(request)
    if not identity.attempt_allowed(f"challenge:{client}", 60, identity.ATTEMPT_WINDOW):
        return JsonResponse({"error": "Too many requests; wait a few minutes."}, status=429)
    return JsonResponse(
        {
            "challenge": logins.challenge_issue(),
            "path": reverse("agents:step-approve", args=[step.pk]),
            "now": int(time.time()),
        }
    )
