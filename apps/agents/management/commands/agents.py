"""`manage.py agents list|show|approve|cancel`: agent tasks for the owner, without a browser.

The shell acts as the node's owner. `approve ID` approves (or with `--reject` rejects) a plan
as it is printed; `approve ID --step N` releases (or rejects) the waiting step at position N,
after printing what it would send out (the step then sends exactly that, or nothing), and counts
as a fresh sign-in for a step above the step-up threshold. A refusal (an unknown task, a state
that does not allow it, a rule it breaks) is printed on standard error with exit code 1, and
changes nothing. Nothing secret is printed: receipts show the payment's hash, never
its preimage; what models answered is shown as data, control characters taken out.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.agents import approvals, execution, services
from apps.agents.models import Step, Task
from apps.agents.services import AgentError
from apps.agents.states import StepState, TaskState
from apps.identity import services as identity
from apps.identity.management.database import database_ready
from apps.identity.models import Member
from apps.inference.backends.base import AnswerRefused
from apps.wallet.templatetags.wallet import sats

HOW = "shell"
# Model output is untrusted: no terminal escape sequence or other control character reaches
# the owner's terminal (newlines and tabs are kept).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class Command(BaseCommand):
    help = "List agent tasks, show one, approve or reject its plan or a waiting step, cancel it."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="every task, newest first; waiting steps marked")
        listing.add_argument("--state", choices=TaskState.values, help="only tasks in this state")
        listing.add_argument("--json", action="store_true", dest="as_json")
        show = actions.add_parser(
            "show", help="a task: its policy, steps, what waits and why, results, receipts"
        )
        show.add_argument("task_id", type=int, metavar="ID")
        show.add_argument("--json", action="store_true", dest="as_json")
        approve = actions.add_parser(
            "approve", help="approve the plan as printed, or with --step N a waiting step"
        )
        approve.add_argument("task_id", type=int, metavar="ID")
        approve.add_argument("--step", type=int, metavar="N", help="the waiting step's position")
        approve.add_argument(
            "--up-to-sat",
            type=int,
            metavar="N",
            help="with --step: also release steps like it in this task costing up to N sats",
        )
        approve.add_argument("--reject", action="store_true", help="reject instead")
        cancel = actions.add_parser("cancel", help="stop a task: nothing new is paid")
        cancel.add_argument("task_id", type=int, metavar="ID")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        database_ready()
        try:
            getattr(self, f"_{action}")(**options)
        except AgentError as refusal:
            raise CommandError(str(refusal)) from None

    def _list(self, state: str | None, as_json: bool, **options: Any) -> None:
        tasks = Task.objects.select_related("asked_by").order_by("-created_at", "-pk")
        if state:
            tasks = tasks.filter(state=state)
        shown = [_task_line(task) for task in tasks]
        if as_json:
            self.stdout.write(json.dumps(shown, indent=2))
            return
        if not shown:
            self.stdout.write("No agent task" + (f" {state}." if state else " yet."))
        for line in shown:
            waiting = "".join(f"  ⏸ step {n} waits" for n in line["waiting_steps"])
            self.stdout.write(
                f"{line['id']}  {line['state']}  {line['template'] or '-'}  {line['asker']}  "
                f"{sats(line['spent_msat'])} / {sats(line['budget_cap_msat'])}  "
                f"{line['created']}{waiting}"
            )

    def _show(self, task_id: int, as_json: bool, **options: Any) -> None:
        shown = task_shown(_task(task_id))
        if as_json:
            self.stdout.write(json.dumps(shown, indent=2))
            return
        self._task_write(shown)

    def _approve(
        self, task_id: int, step: int | None, up_to_sat: int | None, reject: bool, **options: Any
    ) -> None:
        task, owner = _task(task_id), _owner()
        if step is not None:
            self._step_decide(task, owner, step, up_to_sat, reject)
            return
        if up_to_sat is not None:
            raise CommandError("--up-to-sat adds a rule for a step: give --step N too.")
        if reject:
            services.plan_reject(task, owner, HOW)
            self.stdout.write(f"Rejected the plan of task {task.pk}: it is cancelled.")
            return
        # The digest first, then what is printed: a plan edited in between is refused, never
        # approved unseen.
        digest = services.plan_digest(task)
        self._steps_write(task_shown(task)["steps"])
        services.plan_approve(task, owner, HOW, digest=digest)
        self.stdout.write(f"Approved the plan of task {task.pk}, as printed above: it runs.")

    def _step_decide(
        self, task: Task, owner: Member, position: int, up_to_sat: int | None, reject: bool
    ) -> None:
        found = Step.objects.select_related("task").filter(task=task, position=position).first()
        if found is None:
            raise CommandError(f"Task {task.pk} has no step {position}.")
        if reject:
            if up_to_sat is not None:
                raise CommandError("--up-to-sat adds a rule for approvals, not rejections.")
            approvals.step_reject(found, owner, HOW)
            self.stdout.write(f"Rejected step {position} of task {task.pk}: the task failed.")
            return
        rule = None if up_to_sat is None else up_to_sat * 1000
        leaving = self._leaving_write(found)
        approvals.step_approve(found, owner, HOW, rule_up_to_msat=rule, leaving_digest=leaving)
        also = "" if rule is None else f", and steps like it up to {sats(rule)}"
        self.stdout.write(f"Approved step {position} of task {task.pk}{also}.")

    def _leaving_write(self, step: Step) -> str:
        """For a step sending data out, print what would leave (redacted, as the dashboard's
        preview shows it) and return its digest: the step then sends exactly that, or
        nothing. "" for a step that sends nothing out."""
        if step.kind != Step.Kind.MODEL_CALL or not step.leaves_node:
            return ""
        try:
            preview = execution.step_preview(step)
        except AnswerRefused as refusal:
            raise CommandError(f"Step {step.position} would be refused: {refusal}") from None
        if not preview.outside:
            return ""
        found = ", ".join(f"{kind} {count}" for kind, count in preview.found.items())
        self.stdout.write(
            f"Step {step.position} would send to {preview.provider}"
            f" (taken out: {found or 'nothing'}):"
        )
        for message in preview.messages:
            self.stdout.write(f"  {message['role']}: {_clean(message['content'])}")
        return preview.digest

    def _cancel(self, task_id: int, **options: Any) -> None:
        task = _task(task_id)
        if not services.task_cancel(task, _owner()):
            task.refresh_from_db()
            raise CommandError(f"Task {task.pk} has already ended ({task.state}).")
        self.stdout.write(f"Cancelled task {task.pk}: nothing new is paid.")

    def _task_write(self, shown: dict[str, Any]) -> None:
        write = self.stdout.write
        write(f"Task {shown['id']}  {shown['state']}  asked by {shown['asker']}")
        write(f"  goal: {shown['goal']}")
        write(f"  template: {shown['template'] or '-'}  created {shown['created']}")
        write(f"  spent {sats(shown['spent_msat'])} of {sats(shown['budget_cap_msat'])}")
        policy = shown["policy"]
        write(
            f"  policy: approval above {sats(policy['approval_threshold_msat'])}, "
            f"sign in again above {sats(policy['step_up_threshold_msat'])}; data "
            f"{'may leave' if policy['data_may_leave'] else 'stays on this node'}; models: "
            f"{', '.join(policy['models']) or 'any allowed'}; providers: "
            f"{', '.join(policy['providers']) or 'none'}"
        )
        self._steps_write(shown["steps"])
        if shown["result"]:
            write(f"Result:\n{shown['result']}")
        if shown["failure"]:
            write(f"Failure: {shown['failure']}")

    def _steps_write(self, steps: list[dict[str, Any]]) -> None:
        write = self.stdout.write
        for step in steps:
            leaves = "leaves the node" if step["leaves_node"] else "stays on the node"
            write(
                f"  {step['position']}. {step['kind']} {step['target']}  est. "
                f"{sats(step['estimated_cost_msat'])}  {leaves}  group {step['parallel_group']}"
                f"  {step['state']}  cost {sats(step['cost_msat'])}"
            )
            earlier = "  (+ the earlier steps' answers)" if step["takes"] else ""
            write(f"     prompt: {step['prompt']}{earlier}")
            if step["waits"]:
                write(f"     ⏸ waits: {step['waits']}")
            for receipt in step["receipts"]:
                write(
                    f"     receipt: {receipt['payment_hash']}  {sats(receipt['amount_msat'])}"
                    f" + fee {sats(receipt['fee_msat'])}"
                )
            if step["result"]:
                write(f"     result: {step['result']}")
            if step["failure"]:
                write(f"     failure: {step['failure']}")


def _owner() -> Member:
    owner = identity.node_owner()
    if owner is None:
        raise CommandError("This node has no owner yet: claim it first.")
    return owner


def _task(task_id: int) -> Task:
    task = Task.objects.select_related("asked_by").filter(pk=task_id).first()
    if task is None:
        raise CommandError(f"There is no agent task {task_id}.")
    return task


def _asker(member: Member) -> str:
    return member.name or member.short_npub


def _created(task: Task) -> str:
    return timezone.localtime(task.created_at).strftime("%Y-%m-%d %H:%M")


def _task_line(task: Task) -> dict[str, Any]:
    waiting = Step.objects.filter(task=task, state=StepState.AWAITING_APPROVAL)
    return {
        "id": task.pk,
        "state": task.state,
        "template": task.template,
        "asker": _asker(task.asked_by),
        "spent_msat": services.spent_msat(task),
        "budget_cap_msat": task.budget_cap_msat,
        "created": _created(task),
        "waiting_steps": list(waiting.order_by("position").values_list("position", flat=True)),
    }


def task_shown(task: Task) -> dict[str, Any]:
    """The task as the owner reads it; every text a model wrote is cleaned of control
    characters first."""
    steps = Step.objects.select_related("task").filter(task=task).order_by("position")
    return {
        **_task_line(task),
        "goal": _clean(task.goal),
        "policy": services.policy_of(task).to_json(),
        "steps": [_step_shown(step) for step in steps],
        "result": _clean(task.result_text),
        "result_cost_msat": task.result_cost_msat,
        "failure": _clean(task.failure),
    }


def _step_shown(step: Step) -> dict[str, Any]:
    waits = ""
    if step.state == StepState.AWAITING_APPROVAL:
        gate = approvals.step_needs_approval(step)
        waits = gate.reason + ("; above the step-up threshold" if gate.step_up else "")
    return {
        "position": step.position,
        "kind": step.kind,
        "target": step.target,
        "prompt": _clean(step.prompt),
        "takes": step.takes_answers,
        "estimated_cost_msat": step.estimated_cost_msat,
        "leaves_node": step.leaves_node,
        "parallel_group": step.parallel_group,
        "state": step.state,
        "cost_msat": step.cost_msat,
        "waits": waits,
        "result": _clean(step.result),
        "failure": _clean(step.failure),
        "receipts": [
            {key: receipt[key] for key in ("payment_hash", "amount_msat", "fee_msat")}
            for receipt in execution.receipts_of(step)
        ],
    }


def _clean(text: str) -> str:
    return _CONTROL.sub("", text)
