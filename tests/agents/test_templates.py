"""The shipped plans, filled for a task and checked against its policy and cap."""

from __future__ import annotations

from typing import Any

import pytest

from apps.agents import services
from apps.agents.services import AgentError, OutsidePick
from apps.agents.states import TaskState
from apps.agents.templates import TEMPLATES
from apps.wallet import budgets
from tests.agents.conftest import LOCAL, OUTSIDE, steps_of, task_for


def test_the_three_templates_ship() -> None:
    assert set(TEMPLATES) == {"second_opinion", "research_and_summarise", "private_rewrite"}


@pytest.mark.django_db
def test_a_task_caps_its_spending_in_the_wallet(member: Any) -> None:
    task = task_for(member, cap=123_000)
    assert budgets.spendable(task.caller, None) == 123_000
    assert task.state == TaskState.DRAFT


@pytest.mark.django_db
def test_second_opinion_asks_three_models_together_then_compares_locally(member: Any) -> None:
    task = task_for(member)
    services.plan_from_template(task, "second_opinion", local_model=LOCAL, outside=OUTSIDE)
    steps = steps_of(task)
    assert [(s.model, s.parallel_group, s.leaves_node) for s in steps] == [
        (LOCAL, 1, False),
        ("acme/big", 1, True),
        ("beta/wise", 1, True),
        (LOCAL, 2, False),
    ]
    assert [s.estimated_cost_msat for s in steps] == [0, 40_000, 60_000, 0]
    # The goal is placed as written, braces and all; only the comparison is given the answers.
    assert "Is {this} a good idea?" in steps[0].prompt
    assert [s.takes_answers for s in steps] == [False, False, False, True]
    task.refresh_from_db()
    assert (task.state, task.template) == (TaskState.AWAITING_PLAN_APPROVAL, "second_opinion")


@pytest.mark.django_db
def test_research_and_summarise_splits_asks_outside_and_merges(member: Any) -> None:
    task = task_for(member)
    services.plan_from_template(task, "research_and_summarise", local_model=LOCAL, outside=OUTSIDE)
    groups = [(s.parallel_group, s.leaves_node) for s in steps_of(task)]
    assert groups == [(1, False), (2, True), (2, True), (3, False)]


@pytest.mark.django_db
def test_a_private_rewrite_never_leaves_even_where_nothing_may(member: Any) -> None:
    task = task_for(member, data_may_leave=False, providers=[])
    services.plan_from_template(task, "private_rewrite", local_model=LOCAL)
    assert [(s.model, s.leaves_node) for s in steps_of(task)] == [(LOCAL, False)]


@pytest.mark.parametrize(
    ("policy", "outside", "cap", "refusal"),
    [
        ({"data_may_leave": False}, OUTSIDE, 200_000, "keeps its data on this node"),
        ({"providers": ["acme"]}, OUTSIDE, 200_000, "provider of 'beta/wise'"),
        ({"models": [LOCAL, "acme/big"]}, OUTSIDE, 200_000, "model 'beta/wise'"),
        ({}, OUTSIDE[:1], 200_000, "needs 2 outside models"),
        ({}, OUTSIDE, 99_999, "above the task's budget cap"),
        ({}, (OUTSIDE[0], OutsidePick("beta/wise", -1)), 200_000, "cannot be negative"),
    ],
)
@pytest.mark.django_db
def test_a_plan_outside_the_policy_or_cap_is_refused_and_nothing_is_made(
    member: Any, policy: dict[str, Any], outside: Any, cap: int, refusal: str
) -> None:
    task = task_for(member, cap=cap, **policy)
    with pytest.raises(AgentError, match=refusal):
        services.plan_from_template(task, "second_opinion", local_model=LOCAL, outside=outside)
    task.refresh_from_db()
    assert (task.state, steps_of(task)) == (TaskState.DRAFT, [])


@pytest.mark.django_db
def test_a_task_is_planned_once(member: Any) -> None:
    task = task_for(member)
    services.plan_from_template(task, "private_rewrite", local_model=LOCAL)
    with pytest.raises(AgentError, match="Only a draft"):
        services.plan_from_template(task, "private_rewrite", local_model=LOCAL)
    assert len(steps_of(task)) == 1


@pytest.mark.django_db
def test_an_outside_model_is_not_taken_for_the_local_one(member: Any) -> None:
    task = task_for(member)
    with pytest.raises(AgentError, match="not a local model"):
        services.plan_from_template(task, "private_rewrite", local_model="acme/big")


@pytest.mark.django_db
def test_a_policy_with_a_step_up_below_its_threshold_is_refused(member: Any) -> None:
    with pytest.raises(AgentError, match="step-up"):
        task_for(member, step_up_threshold_msat=5_000)
