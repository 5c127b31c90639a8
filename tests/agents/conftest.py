from __future__ import annotations

from typing import Any

import pytest

from apps.agents import services
from apps.agents.models import Step, Task
from apps.agents.services import OutsidePick

LOCAL = "smollm2"
OUTSIDE = (OutsidePick("acme/big", 40_000), OutsidePick("beta/wise", 60_000))
POLICY = {
    "approval_threshold_msat": 10_000,
    "step_up_threshold_msat": 50_000,
    "data_may_leave": True,
    "providers": ["acme", "beta"],
}


def task_for(person: Any, *, cap: int = 200_000, **policy: Any) -> Task:
    return services.task_create(person, "Is {this} a good idea?", cap, {**POLICY, **policy})


def second_opinion(person: Any, **policy: Any) -> Task:
    task = task_for(person, **policy)
    services.plan_from_template(task, "second_opinion", local_model=LOCAL, outside=OUTSIDE)
    task.refresh_from_db()
    return task


def steps_of(task: Task) -> list[Step]:
    return list(Step.objects.filter(task=task).order_by("position"))


@pytest.fixture
def planned(member: Any) -> Task:
    """A member's second-opinion task, waiting for its plan to be approved."""
    return second_opinion(member)


@pytest.fixture
def running(planned: Task, member: Any) -> Task:
    services.plan_approve(planned, member, "dashboard", digest=services.plan_digest(planned))
    planned.refresh_from_db()
    return planned
