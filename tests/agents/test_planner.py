"""Plans proposed by a model: the real engine on the bundled SmolLM2 file, held to the plan's
JSON schema by its grammar, proposes a plan that is saved only once checked; and hand-written
answers breaking each rule are refused, the task left a draft with no step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from apps.agents import planner, services
from apps.agents.models import Step, Task
from apps.agents.planner import Offer
from apps.agents.services import AgentError
from apps.agents.states import TaskState
from apps.audit.models import AuditEvent
from apps.inference.models import LocalModel
from tests.agents.conftest import steps_of
from tests.inference.conftest import MODEL, RecordingDecoder, bundled_local_model, serving_engine

CONTEXT = 2048  # the instructions, the example, the goal, and a plan of six steps
POLICY = {
    "approval_threshold_msat": 10_000,
    "step_up_threshold_msat": 50_000,
    "data_may_leave": True,
    "models": ["smollm2", "acme/big"],
    "providers": ["acme"],
}


def _task(person: Any, *, cap: int = 100_000, **policy: Any) -> Task:
    return services.task_create(person, "Plan a birthday party for Ada.", cap, {**POLICY, **policy})


def _step(**changed: Any) -> dict[str, Any]:
    return {
        "kind": "model_call",
        "model": "smollm2",
        "prompt": "List ten party games for children.",
        "parallel_group": 1,
        "takes_answers": False,
        "estimated_cost_sat": 0,
        **changed,
    }


def _answer(*steps: dict[str, Any]) -> str:
    return json.dumps({"steps": list(steps)})


def _refused(task: Task, answered: str, **options: Any) -> str:
    with pytest.raises(AgentError) as refusal:
        planner.plan_from_answer(task, answered, by_model="smollm2", **options)
    task.refresh_from_db()
    assert task.state == TaskState.DRAFT
    assert not Step.objects.filter(task=task).exists()
    assert not AuditEvent.objects.filter(action="agent_plan_made").exists()
    return str(refusal.value)


# --- what a proposal may be -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_valid_answer_is_saved_with_where_its_data_goes_worked_out(member: Any) -> None:
    task = _task(member)
    answered = _answer(
        _step(estimated_cost_sat=7),
        _step(model="acme/big", estimated_cost_sat=30, prompt="Suggest a cake."),
        _step(prompt="Combine the ideas into one plan.", parallel_group=2, takes_answers=True),
    )

    steps = planner.plan_from_answer(task, answered, by_model="smollm2")

    task.refresh_from_db()
    assert task.state == TaskState.AWAITING_PLAN_APPROVAL and task.template == ""
    saved = steps_of(task)
    assert [s.pk for s in saved] == [s.pk for s in steps]
    assert [(s.position, s.model, s.leaves_node) for s in saved] == [
        (1, "smollm2", False),
        (2, "acme/big", True),
        (3, "smollm2", False),
    ]
    # A local step costs nothing, whatever the model guessed.
    assert [s.estimated_cost_msat for s in saved] == [0, 30_000, 0]
    assert [(s.parallel_group, s.takes_answers) for s in saved] == [
        (1, False),
        (1, False),
        (2, True),
    ]
    made = AuditEvent.objects.get(action="agent_plan_made")
    assert made.detail == "proposed by smollm2: 3 steps"


@pytest.mark.django_db
def test_an_outside_estimate_below_the_models_price_is_raised_to_it(member: Any) -> None:
    task = _task(member)
    offers = [Offer("smollm2", 0), Offer("acme/big", 25_000)]

    planner.plan_from_answer(
        task, _answer(_step(model="acme/big", estimated_cost_sat=1)), by_model="x", offers=offers
    )

    assert steps_of(task)[0].estimated_cost_msat == 25_000


@pytest.mark.django_db
def test_the_schema_offers_only_the_models_the_policy_allows(member: Any) -> None:
    task = _task(member, models=["smollm2", "acme/big", "beta/wise"])

    offers = planner.offers_for(task)
    sampling = planner.sampling_for(offers)

    assert [offer.model for offer in offers] == ["smollm2", "acme/big"]
    schema = sampling.response_format["json_schema"]["schema"]  # type: ignore[index]
    step = schema["properties"]["steps"]
    assert step["maxItems"] == 6
    assert step["items"]["properties"]["model"] == {"enum": ["smollm2", "acme/big"]}
    assert step["items"]["properties"]["kind"] == {"const": "model_call"}
    assert sampling.grammar is not None and '"\\"beta/wise\\""' not in sampling.grammar
    assert '"\\"acme/big\\""' in sampling.grammar


# --- what is refused ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_model_the_policy_does_not_allow_is_refused(member: Any) -> None:
    task = _task(member)

    message = _refused(task, _answer(_step(), _step(model="beta/wise")))

    assert message == (
        "Step 2 of the model's plan names a model the task's policy does not offer: 'beta/wise'."
    )


@pytest.mark.django_db
def test_an_offered_model_the_policy_forbids_is_still_refused(member: Any) -> None:
    task = _task(member, data_may_leave=False)
    offers = [Offer("smollm2", 0), Offer("acme/big", 0)]  # as if the list were wrong

    message = _refused(task, _answer(_step(model="acme/big")), offers=offers)

    assert message == "The task's policy keeps its data on this node."


@pytest.mark.django_db
def test_a_cost_above_the_cap_is_refused(member: Any) -> None:
    task = _task(member, cap=50_000)
    answered = _answer(
        _step(model="acme/big", estimated_cost_sat=30),
        _step(model="acme/big", estimated_cost_sat=21),
    )

    assert _refused(task, answered) == "The plan's estimated cost is above the task's budget cap."


@pytest.mark.django_db
def test_a_step_claiming_an_outside_model_stays_on_the_node_is_refused(member: Any) -> None:
    task = _task(member)

    message = _refused(task, _answer(_step(model="acme/big", leaves_node=False)))

    assert message == "Step 1 of the proposed plan misstates whether its data leaves this node."


@pytest.mark.django_db
def test_more_than_six_steps_are_refused(member: Any) -> None:
    task = _task(member)

    message = _refused(task, _answer(*[_step() for _ in range(7)]))

    assert message == "The model's plan has more than 6 steps."


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("answered", "message"),
    [
        ('{"steps": [{"kind": "model_call", ', "The model's plan is not valid JSON."),
        ("[]", 'The model\'s plan is not a JSON object with a list of "steps".'),
        ('{"steps": []}', "The proposed plan has no step."),
        (_answer({"kind": "model_call"}), "Step 1 of the model's plan lacks one of"),
        (_answer(_step(recipient="x")), "Step 1 of the model's plan has fields no step has."),
        (_answer(_step(parallel_group="1")), "Step 1 of the model's plan has a number or"),
        (_answer(_step(estimated_cost_sat=-5)), "Step 1 of the model's plan has a negative cost."),
        (_answer(_step(parallel_group=0)), "Step 1 of the proposed plan has a parallel group"),
        (_answer(_step(prompt=" ")), "Step 1 of the proposed plan needs a prompt"),
    ],
)
def test_an_answer_that_is_not_the_json_asked_for_is_refused(
    member: Any, answered: str, message: str
) -> None:
    task = _task(member)

    assert _refused(task, answered).startswith(message)


@pytest.mark.django_db
def test_a_paid_http_step_to_an_address_the_policy_does_not_list_or_an_unknown_kind_is_refused(
    member: Any,
) -> None:
    task = _task(member, urls=["https://api.example.org/free/"])
    paid = _step(kind="paid_http", model="", url="https://api.example.org/pay")

    assert _refused(task, _answer(_step(), paid)) == (
        "The task's policy does not allow paid requests to 'https://api.example.org/pay'."
    )
    assert _refused(
        task, _answer(_step(kind="paid_http", url="https://api.example.org/free/x"))
    ) == ("Step 1 of the proposed plan is a paid HTTP request naming a model.")
    assert _refused(task, _answer(_step(kind="shell"))) == (
        "Step 1 of the proposed plan is of an unknown kind."
    )


@pytest.mark.django_db
def test_a_paid_http_step_to_a_listed_address_leaves_the_node_at_its_estimate(member: Any) -> None:
    task = _task(member, urls=["https://api.example.org/"])
    paid = _step(
        kind="paid_http", model="", url="https://api.example.org/weather", estimated_cost_sat=7
    )

    [step] = planner.plan_from_answer(task, _answer(paid), by_model="smollm2")

    assert (step.kind, step.url, step.model) == ("paid_http", "https://api.example.org/weather", "")
    assert (step.leaves_node, step.estimated_cost_msat) == (True, 7000)
    schema = planner.schema_for([planner.Offer("smollm2", 0)], ("https://api.example.org/",))
    variants = schema["properties"]["steps"]["items"]["anyOf"]
    assert variants[1]["properties"]["url"] == {"enum": ["https://api.example.org/"]}


@pytest.mark.django_db
def test_a_plan_whose_groups_go_back_is_refused(member: Any) -> None:
    task = _task(member)
    answered = _answer(_step(parallel_group=2), _step(parallel_group=1))

    assert _refused(task, answered) == "Step 2 runs in an earlier group than the step before it."


@pytest.mark.django_db
def test_a_task_not_in_draft_is_not_planned_again(member: Any) -> None:
    task = _task(member)
    planner.plan_from_answer(task, _answer(_step()), by_model="smollm2")
    task.refresh_from_db()

    with pytest.raises(AgentError, match="Only a draft task"):
        planner.plan_from_answer(task, _answer(_step(), _step()), by_model="smollm2")
    with pytest.raises(AgentError, match="Only a draft task"):
        planner.plan_propose(task, model="smollm2")
    assert len(steps_of(task)) == 1


@pytest.mark.django_db
def test_a_planner_the_policy_does_not_allow_is_not_asked(member: Any) -> None:
    task = _task(member, data_may_leave=False, models=[])

    with pytest.raises(AgentError, match="keeps its data on this node"):
        planner.plan_propose(task, model="acme/big")
    task.refresh_from_db()
    assert task.state == TaskState.DRAFT


# --- the real local model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingDecoder]:
    with serving_engine(CONTEXT, slots=1) as decoder:
        yield decoder


@pytest.fixture
def local(transactional_db: None, engine: RecordingDecoder, settings: Any) -> LocalModel:
    settings.ENGINE_CONTEXT_PER_SLOT = CONTEXT
    engine.received.clear()
    return bundled_local_model()


def test_the_local_model_proposes_a_plan_that_is_checked_and_saved(
    local: LocalModel, engine: RecordingDecoder, member: Any
) -> None:
    task = services.task_create(
        member,
        "Write a short poem about autumn, then check its rhymes.",
        10_000,
        {"approval_threshold_msat": 0, "step_up_threshold_msat": 0, "models": [MODEL]},
    )

    steps = planner.plan_propose(task, model=MODEL)

    task.refresh_from_db()
    assert task.state == TaskState.AWAITING_PLAN_APPROVAL
    assert 1 <= len(steps) <= 6
    saved = steps_of(task)
    assert [s.position for s in saved] == list(range(1, len(saved) + 1))
    for step in saved:
        assert (step.kind, step.model, step.leaves_node) == ("model_call", MODEL, False)
        assert step.estimated_cost_msat == 0 and step.prompt.strip()
        assert 1 <= step.parallel_group <= 6 and step.state == "planned"
    # The goal was the model's only input from the person, after the instructions and example.
    (asked,) = engine.received
    assert asked[-1] == {"role": "user", "content": task.goal}
    assert f"- {MODEL}: local" in asked[0]["content"]
