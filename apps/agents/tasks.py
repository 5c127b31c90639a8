"""Celery's side of agents: thin tasks, each calling one service (execution.py, dm.py)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from apps.agents import dm, execution, planner


@shared_task(name="agents.advance")
def advance(task_id: int) -> None:
    for step_id in execution.advance(task_id):
        step_run.delay(step_id)


@shared_task(name="agents.step_run")
def step_run(step_id: int) -> None:
    execution.step_run(step_id)


@shared_task(name="agents.plan_propose")
def plan_propose(task_id: int, model: str) -> None:
    planner.plan_now(task_id, model)


@shared_task(name="agents.resume")
def resume() -> None:
    """Running tasks looked at again, and steps whose worker died run again."""
    tasks_running, orphans = execution.resume()
    for task_id in tasks_running:
        advance.delay(task_id)
    for step_id in orphans:
        step_run.delay(step_id)


@shared_task(name="agents.expire")
def expire() -> None:
    """Tasks left waiting too long expire; DMs read long ago are forgotten."""
    execution.expire()
    dm.seen_prune()


@shared_task(name="agents.approval_request")
def approval_request(step_id: int) -> None:
    dm.approval_request_send(step_id)


@shared_task(name="agents.inbox")
def inbox() -> None:
    dm.inbox_read()


@shared_task(name="agents.result_dm")
def result_dm(task_id: int) -> None:
    dm.result_send(task_id)


@worker_ready.connect
def resume_at_start(**_: Any) -> None:
    """What a killed worker left running goes on as soon as a worker is back."""
    resume.delay()
