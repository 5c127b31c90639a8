"""What the worker tests ask of a running node, through its own services, as a person at the
dashboard or the shell would: `python -m tests.agents.driving '[[<action>, [<arguments>]], …]'`,
run with the node's environment (one process for several actions: each start costs a second).
It prints one JSON line: what each action returned, in order."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sovereign.settings")
django.setup()

from nostr_sdk import Keys  # noqa: E402

from apps.agents import services  # noqa: E402
from apps.agents.approvals import step_approve  # noqa: E402
from apps.agents.models import Step, Task  # noqa: E402
from apps.agents.states import StepState, TaskState  # noqa: E402
from apps.identity.models import Member, Role  # noqa: E402
from apps.inference.services import BUNDLED_NAME  # noqa: E402
from apps.providers import services as providers  # noqa: E402

POLICY = {
    "approval_threshold_msat": 10_000,
    "step_up_threshold_msat": 100_000,
    "data_may_leave": True,
}


def person(role: str) -> Member:
    found = Member.objects.filter(role=role).first()
    if found is not None:
        return found
    return Member.objects.create_user(pubkey=Keys.generate().public_key().to_hex(), role=role)


def provider_add(url: str, name: str) -> int:
    person(Role.OWNER)
    return providers.provider_add(url, kind="l402", name=name).pk


def _task(cap: int, names: list[str]) -> Task:
    policy = {**POLICY, "providers": names}
    return services.task_create(person(Role.MEMBER), "Is a sat worth it?", cap, policy)


def second_opinion(picks: list[list[Any]], cap: int) -> int:
    """A second-opinion plan: the bundled model and two outside picks, [model, cost]."""
    outside = [services.OutsidePick(model, cost) for model, cost in picks]
    task = _task(cap, [model.split("/")[0] for model, _ in picks])
    services.plan_from_template(task, "second_opinion", local_model=BUNDLED_NAME, outside=outside)
    return task.pk


def planned(steps: list[list[Any]], cap: int) -> int:
    """A plan of [model ("local": the bundled one), parallel group, takes answers, cost]."""
    names = [model.split("/")[0] for model, *_ in steps if "/" in model]
    task = _task(cap, names)
    services.task_moved(task, TaskState.DRAFT, TaskState.AWAITING_PLAN_APPROVAL, "test")
    for position, (model, group, takes_answers, cost) in enumerate(steps, start=1):
        name = BUNDLED_NAME if model == "local" else model
        Step.objects.create(
            task=task,
            position=position,
            kind=Step.Kind.MODEL_CALL,
            model=name,
            prompt=f"In one short sentence: what is a satoshi? ({position})",
            takes_answers=takes_answers,
            estimated_cost_msat=cost,
            leaves_node="/" in name,
            parallel_group=group,
        )
    return task.pk


def plan_edit(task_id: int, remove: list[int], models: dict[str, str]) -> list[str]:
    """Remove the steps at these positions, change the model of others ({position: model})."""
    task = Task.objects.get(pk=task_id)
    at = {step.position: step.pk for step in Step.objects.filter(task=task)}
    edits: list[services.PlanEdit] = [services.RemoveStep(at[p]) for p in remove]
    edits += [services.ChangeModel(at[int(p)], model) for p, model in models.items()]
    return [step.model for step in services.plan_edit(task, person(Role.MEMBER), edits)]


def plan_approve(task_id: int) -> str:
    """Approve the plan as the asker saw it (task 0: the newest task)."""
    task = Task.objects.get(pk=task_id) if task_id else Task.objects.latest("pk")
    services.plan_approve(task, person(Role.MEMBER), "dashboard", digest=services.plan_digest(task))
    return str(Task.objects.get(pk=task.pk).state)


def step_approve_at(task_id: int, position: int) -> str:
    """The owner approves the step at `position`, as the dashboard does."""
    step = Step.objects.select_related("task").get(task_id=task_id, position=position)
    step_approve(step, person(Role.OWNER), "dashboard")
    return str(Task.objects.get(pk=task_id).state)


def approve_waiting(task_id: int) -> int:
    waiting = Step.objects.select_related("task").filter(
        task_id=task_id, state=StepState.AWAITING_APPROVAL
    )
    for step in waiting:
        step_approve(step, person(Role.OWNER), "dashboard")
    return len(waiting)


def cancel(task_id: int) -> bool:
    return services.task_cancel(Task.objects.get(pk=task_id), person(Role.MEMBER))


def kick(task_id: int) -> None:
    """Have the worker look at the task (0: the newest), and at every running task, as it
    does on its own."""
    from apps.agents import tasks

    tasks.advance.delay(task_id or Task.objects.latest("pk").pk)
    tasks.resume.delay()


ACTIONS = {
    action.__name__: action
    for action in (
        provider_add,
        second_opinion,
        planned,
        plan_edit,
        plan_approve,
        step_approve_at,
        approve_waiting,
        cancel,
        kick,
    )
}

if __name__ == "__main__":
    results = [ACTIONS[action](*arguments) for action, arguments in json.loads(sys.argv[1])]
    sys.stdout.write(json.dumps(results) + "\n")
