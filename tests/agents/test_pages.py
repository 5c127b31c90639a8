"""The Agents pages through Django's test client: a task made from the form, its plan edited,
approved or rejected, a waiting step approved with what the owner saw leaving, step-up with a
fresh signature, and who may see and decide what."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from django.test import Client
from nostr_sdk import EventBuilder, Keys, Kind, Tag, Timestamp

from apps.agents import approvals, execution, planner, services, tasks
from apps.agents.models import Approval, Step, Task
from apps.agents.services import OutsidePick
from apps.agents.states import StepState, TaskState
from apps.identity.models import LoginChallenge, Member
from apps.inference.models import LocalModel
from apps.providers.models import Provider, ProviderModel
from apps.wallet.models import Budget
from tests.agents.conftest import steps_of

pytestmark = pytest.mark.django_db

LOCAL = "smollm2-135m-instruct"
PICKS = ["lan/strong-1", "lan/strong-2"]
NODE = "http://localhost:8000"  # on the node's trusted origins by default


@pytest.fixture
def local_model(db: None) -> LocalModel:
    return LocalModel.objects.create(
        name=LOCAL, file_name="smollm2.gguf", size=1, sha256="a" * 64, architecture="llama",
        parameters=135_000_000, quantization="Q8_0", source=LocalModel.Source.BUNDLED,
    )  # fmt: skip


def priced(sat_each: int) -> None:
    """The `lan` provider paid per request, at this price for each of its models."""
    Provider.objects.filter(name="lan").update(kind=Provider.Kind.L402)
    ProviderModel.objects.filter(provider__name="lan").update(request_msat=sat_each * 1000)


def new_task(client: Client, **fields: Any) -> Any:
    form = {"template": "private_rewrite", "goal": "make this nicer", "budget_sat": "100"}
    form.update({"local_model": LOCAL, **fields})
    return client.post("/agents/new", form)


def approve_digest(page: str) -> str:
    found = re.search(r'name="leaving_digest" value="([0-9a-f]*)"', page)
    assert found is not None
    return found.group(1)


def waiting_outside_step(owner: Member, asker: Member, cost_msat: int = 0) -> Step:
    """A second opinion asked by `asker` whose outside step waits for the owner."""
    task = services.task_create(
        asker,
        "My e-mail is annika.berg@example.org: is this a good idea?",
        10_000_000,
        services.Policy(0, 1_000_000, data_may_leave=True, providers=("lan",)),
    )
    outside = [OutsidePick(name, cost_msat) for name in PICKS]
    services.plan_from_template(task, "second_opinion", local_model=LOCAL, outside=outside)
    services.plan_approve(task, asker, "dashboard", digest=services.plan_digest(task))
    step = Step.objects.select_related("task").get(task=task, position=2)
    assert approvals.step_gate(step).needed
    step.refresh_from_db()
    assert step.state == StepState.AWAITING_APPROVAL
    return step


def test_a_member_makes_a_private_rewrite_and_sees_its_plan(
    member: Member, member_client: Client, local_model: LocalModel
) -> None:
    response = new_task(member_client, goal="plz make <b>this</b> nicer", result_by_dm="on")

    task = Task.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/agents/{task.pk}/"
    assert (task.asked_by, task.state, task.template) == (
        member,
        TaskState.AWAITING_PLAN_APPROVAL,
        "private_rewrite",
    )
    assert task.result_by_dm and task.budget_cap_msat == 100_000
    assert not services.policy_of(task).data_may_leave
    page = member_client.get(f"/agents/{task.pk}/").content.decode()
    assert "Rewrite this text to be clear" in page
    assert "plz make &lt;b&gt;this&lt;/b&gt; nicer" in page and "<b>this</b>" not in page
    assert services.plan_digest(task) in page
    listed = member_client.get("/agents/").content.decode()
    assert "Private rewrite" in listed and "Waiting for the plan to be approved" in listed


def test_a_second_opinion_uses_the_picked_models_at_their_prices(
    member_client: Client, local_model: LocalModel, outside: Any
) -> None:
    priced(sat_each=7)

    new_task(member_client, template="second_opinion", outside=PICKS, budget_sat="50")

    task = Task.objects.get()
    policy = services.policy_of(task)
    assert policy.data_may_leave and policy.providers == ("lan",)
    assert [(s.model, s.estimated_cost_msat, s.leaves_node) for s in steps_of(task)] == [
        (LOCAL, 0, False),
        ("lan/strong-1", 7_000, True),
        ("lan/strong-2", 7_000, True),
        (LOCAL, 0, False),
    ]


def test_a_refused_plan_creates_nothing_and_says_why(
    member_client: Client, local_model: LocalModel, outside: Any
) -> None:
    priced(sat_each=40)

    response = new_task(member_client, template="second_opinion", outside=PICKS, budget_sat="50")

    assert response.status_code == 400
    assert "above the task&#x27;s budget cap" in response.content.decode()
    assert not Task.objects.exists()
    assert not Budget.objects.filter(scope=Budget.Scope.CALLER).exists()


def test_a_template_with_too_few_outside_models_is_refused(
    member_client: Client, local_model: LocalModel, outside: Any
) -> None:
    response = new_task(member_client, template="second_opinion", outside=PICKS[:1])

    assert response.status_code == 400
    assert "Second opinion needs 2 outside models." in response.content.decode()
    assert not Task.objects.exists()


def test_a_friend_may_not_use_agents(friend_client: Client, local_model: LocalModel) -> None:
    assert friend_client.get("/agents/").status_code == 403
    assert new_task(friend_client).status_code == 403
    assert not Task.objects.exists()


def test_the_plan_is_edited_then_approved_only_as_shown(
    member: Member, member_client: Client, local_model: LocalModel, outside: Any
) -> None:
    priced(sat_each=7)
    new_task(member_client, template="second_opinion", outside=PICKS, budget_sat="50")
    task = Task.objects.get()
    first, second, third, last = steps_of(task)
    shown = services.plan_digest(task)
    edit = f"/agents/{task.pk}/plan/edit"

    member_client.post(edit, {"action": "remove", "step": last.pk})
    member_client.post(edit, {"action": "down", "step": first.pk})
    member_client.post(edit, {"action": "cost", "step": third.pk, "cost_sat": "3"})
    refused = member_client.post(edit, {"action": "cost", "step": third.pk, "cost_sat": "9"})

    assert [(s.pk, s.estimated_cost_msat) for s in steps_of(task)] == [
        (second.pk, 7_000),
        (first.pk, 0),
        (third.pk, 3_000),
    ]
    page = member_client.get(refused["Location"]).content.decode()
    assert "Nothing was changed: A step&#x27;s cost can only be lowered" in page
    member_client.post(f"/agents/{task.pk}/plan/approve", {"digest": shown})
    task.refresh_from_db()
    assert task.state == TaskState.AWAITING_PLAN_APPROVAL  # the plan changed since
    member_client.post(f"/agents/{task.pk}/plan/approve", {"digest": services.plan_digest(task)})
    task.refresh_from_db()
    assert task.state == TaskState.RUNNING
    assert Approval.objects.get(task=task).plan_digest == services.plan_digest(task)


def test_rejecting_the_plan_ends_the_task(member_client: Client, local_model: LocalModel) -> None:
    new_task(member_client)
    task = Task.objects.get()

    member_client.post(f"/agents/{task.pk}/plan/reject")

    task.refresh_from_db()
    assert task.state == TaskState.CANCELLED
    assert {s.state for s in steps_of(task)} == {StepState.CANCELLED}


def test_a_member_cannot_see_or_touch_another_members_task(
    owner: Member, member: Member, local_model: LocalModel, outside: Any
) -> None:
    other = Member.objects.create_user(pubkey=Keys.generate().public_key().to_hex())
    step = waiting_outside_step(owner, other)
    task = step.task
    client = Client()
    client.force_login(member)

    assert client.get(f"/agents/{task.pk}/").status_code == 404
    assert client.get(f"/agents/{task.pk}/panel").status_code == 404
    assert client.post(f"/agents/{task.pk}/cancel").status_code == 404
    assert "Is this a good idea" not in client.get("/agents/").content.decode()
    task.refresh_from_db()
    assert task.state == TaskState.AWAITING_STEP_APPROVAL


def test_the_asker_sees_the_waiting_step_but_cannot_approve_it(
    owner: Member, member: Member, member_client: Client, local_model: LocalModel, outside: Any
) -> None:
    step = waiting_outside_step(owner, member)

    page = member_client.get(f"/agents/{step.task_id}/").content.decode()
    response = member_client.post(f"/agents/steps/{step.pk}/approve", {"leaving_digest": ""})

    assert "Waits for the owner: sends data out" in page
    assert "What will leave this node" not in page  # the owner's decision, the owner's preview
    assert response.status_code == 403
    step.refresh_from_db()
    assert step.state == StepState.AWAITING_APPROVAL


def test_the_owner_approves_a_step_with_the_preview_it_saw(
    owner: Member, member: Member, owner_client: Client, local_model: LocalModel, outside: Any
) -> None:
    step = waiting_outside_step(owner, member)

    page = owner_client.get(f"/agents/{step.task_id}/").content.decode()
    digest = approve_digest(page)
    owner_client.post(f"/agents/steps/{step.pk}/approve", {"leaving_digest": digest})

    assert "What will leave this node" in page
    assert '<mark class="placeholder">[EMAIL_1]</mark>' in page
    leaving = page.split("What will leave this node")[1].split("</ol>")[0]
    assert '<mark class="placeholder">[EMAIL_1]</mark>: is this a good idea?' in leaving
    assert "annika.berg" not in leaving
    assert digest == execution.step_preview(step).digest
    step.refresh_from_db()
    assert step.state == StepState.APPROVED
    assert approvals.leaving_digest_of(step) == digest


def test_the_owner_may_approve_steps_like_it_up_to_a_limit(
    owner: Member, member: Member, owner_client: Client, local_model: LocalModel, outside: Any
) -> None:
    step = waiting_outside_step(owner, member)
    digest = approve_digest(owner_client.get(f"/agents/{step.task_id}/").content.decode())

    owner_client.post(
        f"/agents/steps/{step.pk}/approve", {"leaving_digest": digest, "rule_up_to_sat": "5"}
    )

    rule = step.task.rules.get()
    assert (rule.target, rule.max_cost_msat) == ("lan/strong-1", 5_000)


def test_rejecting_a_step_fails_the_task(
    owner: Member, member: Member, owner_client: Client, local_model: LocalModel, outside: Any
) -> None:
    step = waiting_outside_step(owner, member)

    owner_client.post(f"/agents/steps/{step.pk}/reject")

    step.task.refresh_from_db()
    assert step.task.state == TaskState.FAILED
    assert step.task.failure == "Step 2 was rejected."


def signed_event(keys: Keys, url: str, challenge: str) -> str:
    tags = [["u", url], ["method", "POST"], ["challenge", challenge]]
    builder = EventBuilder(Kind(27235), "").tags([Tag.parse(tag) for tag in tags])
    builder = builder.custom_created_at(Timestamp.from_secs(int(time.time())))
    return str(builder.finalize(keys).as_json())


def challenge_for(client: Client, step: Step) -> dict[str, Any]:
    response = client.post(f"/agents/steps/{step.pk}/challenge")
    assert response.status_code == 200
    issued: dict[str, Any] = response.json()
    return issued


def test_a_step_above_the_step_up_threshold_needs_a_fresh_signature(
    owner: Member,
    member: Member,
    owner_client: Client,
    keys: dict[str, Keys],
    local_model: LocalModel,
    outside: Any,
) -> None:
    step = waiting_outside_step(owner, member, cost_msat=2_000_000)  # above 1,000 sat
    page = owner_client.get(f"/agents/{step.task_id}/").content.decode()
    digest = approve_digest(page)
    url = f"/agents/steps/{step.pk}/approve"
    assert "data-step-up" in page

    unsigned = owner_client.post(url, {"leaving_digest": digest})
    said = owner_client.get(unsigned["Location"]).content.decode()
    step.refresh_from_db()
    assert step.state == StepState.AWAITING_APPROVAL
    assert "Nothing was changed: This step costs more than the step-up threshold" in said

    issued = challenge_for(owner_client, step)
    wrong_key = signed_event(keys["member"], NODE + issued["path"], issued["challenge"])
    owner_client.post(url, {"leaving_digest": digest, "signed_event": wrong_key})
    step.refresh_from_db()
    assert step.state == StepState.AWAITING_APPROVAL

    issued = challenge_for(owner_client, step)
    made_up = signed_event(keys["owner"], NODE + issued["path"], "made-up")
    owner_client.post(url, {"leaving_digest": digest, "signed_event": made_up})
    step.refresh_from_db()
    assert step.state == StepState.AWAITING_APPROVAL

    fresh = signed_event(keys["owner"], NODE + issued["path"], issued["challenge"])
    owner_client.post(url, {"leaving_digest": digest, "signed_event": fresh})
    step.refresh_from_db()
    assert step.state == StepState.APPROVED
    assert LoginChallenge.objects.get(value=issued["challenge"]).used_at is not None
    assert approvals.leaving_digest_of(step) == digest


def test_a_signature_is_used_once(
    owner: Member,
    member: Member,
    owner_client: Client,
    keys: dict[str, Keys],
    local_model: LocalModel,
    outside: Any,
) -> None:
    first = waiting_outside_step(owner, member, cost_msat=2_000_000)
    issued = challenge_for(owner_client, first)
    fresh = signed_event(keys["owner"], NODE + issued["path"], issued["challenge"])
    owner_client.post(f"/agents/steps/{first.pk}/approve", {"signed_event": fresh})
    other = Step.objects.get(task=first.task, position=3)
    Step.objects.filter(pk=other.pk).update(state=StepState.AWAITING_APPROVAL)

    # The same signed event, for another step: addressed elsewhere and already used.
    response = owner_client.post(f"/agents/steps/{other.pk}/approve", {"signed_event": fresh})

    assert response.status_code == 302
    other.refresh_from_db()
    assert other.state == StepState.AWAITING_APPROVAL


def test_cancel_stops_the_task_and_says_so(
    member: Member, member_client: Client, local_model: LocalModel
) -> None:
    new_task(member_client)
    task = Task.objects.get()

    response = member_client.post(f"/agents/{task.pk}/cancel")
    said = member_client.get(response["Location"]).content.decode()
    again = member_client.post(f"/agents/{task.pk}/cancel")

    task.refresh_from_db()
    assert task.state == TaskState.CANCELLED
    assert "nothing new will be paid" in said
    assert "already ended" in member_client.get(again["Location"]).content.decode()


def test_a_done_task_shows_its_result_escaped_and_its_receipts(
    member: Member, member_client: Client, local_model: LocalModel
) -> None:
    new_task(member_client)
    task = Task.objects.get()
    receipt = {"step": 1, "payment_hash": "ab" * 32, "amount_msat": 5_000, "fee_msat": 0}
    provenance = {"models": [LOCAL], "providers": [], "receipts": [receipt]}
    Task.objects.filter(pk=task.pk).update(
        state=TaskState.DONE,
        result_text="**Done** <script>window.pwned = 1</script>",
        result_cost_msat=5_000,
        result_provenance=provenance,
    )

    page = member_client.get(f"/agents/{task.pk}/panel").content.decode()

    assert "<strong>Done</strong>" in page and "<script>window.pwned" not in page
    assert "ab" * 32 in page and "5 sat" in page
    assert "Cancel task" not in page


def test_a_change_is_announced_to_the_asker_and_the_owners(
    member: Member, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from apps.agents import live

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    layer = get_channel_layer()
    mine = async_to_sync(layer.new_channel)()
    owners = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(live.member_group(member.pk), mine)
    async_to_sync(layer.group_add)(live.OWNERS_GROUP, owners)
    task = services.task_create(member, "goal", 0, services.Policy(0, 0))

    with django_capture_on_commit_callbacks(execute=True):
        live.task_changed(task.pk)

    for channel in (mine, owners):
        message = async_to_sync(layer.receive)(channel)
        assert message == {"type": "agents.changed", "task_id": task.pk}
    assert json.dumps(message)  # what goes out names the task, nothing more


@pytest.mark.django_db(transaction=True)
def test_the_live_socket_tells_a_member_of_their_own_tasks_and_refuses_a_friend(
    member: Member, friend: Member, settings: Any
) -> None:
    from asgiref.sync import async_to_sync
    from asgiref.testing import ApplicationCommunicator
    from channels.layers import get_channel_layer

    from apps.agents import live
    from apps.agents.consumers import AgentsConsumer

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    mine = services.task_create(member, "goal", 0, services.Policy(0, 0))

    async def watch(person: Member) -> Any:
        scope = {"type": "websocket", "path": "/ws/agents/", "user": person, "headers": []}
        socket = ApplicationCommunicator(AgentsConsumer.as_asgi(), scope)
        await socket.send_input({"type": "websocket.connect"})
        answer = await socket.receive_output(5)
        if answer["type"] != "websocket.accept":
            return answer
        layer = get_channel_layer()
        await layer.group_send(live.OWNERS_GROUP, {"type": "agents.changed", "task_id": 999})
        await layer.group_send(
            live.member_group(person.pk), {"type": "agents.changed", "task_id": mine.pk}
        )
        heard = await socket.receive_output(5)
        await socket.send_input({"type": "websocket.disconnect", "code": 1000})
        await socket.wait(5)
        return json.loads(heard["text"])

    assert async_to_sync(watch)(member) == {"type": "changed", "task_id": mine.pk}
    assert async_to_sync(watch)(friend) == {"type": "websocket.close", "code": 4403}


@pytest.mark.django_db(transaction=True)  # the worker is asked once the task is committed
def test_a_task_planned_by_the_local_model_is_planned_by_the_worker_with_the_models_ticked(
    owner: Member, owner_client: Client, local_model: LocalModel, outside: Any, monkeypatch: Any
) -> None:
    asked: list[tuple[int, str]] = []
    monkeypatch.setattr(tasks.plan_propose, "delay", lambda *args: asked.append(args))
    response = new_task(
        owner_client,
        template="proposed",
        outside=PICKS[:1],
        urls="https://api.example.org/\n",
        goal="plan my week",
    )
    task = Task.objects.get()
    assert response.status_code == 302
    assert (task.state, asked) == (TaskState.DRAFT, [(task.pk, LOCAL)])
    policy = services.policy_of(task)
    assert policy.models == (LOCAL, PICKS[0])
    assert policy.urls == ("https://api.example.org/",)
    assert "writing the plan" in owner_client.get(f"/agents/{task.pk}/").content.decode()


def test_a_plan_the_model_could_not_write_ends_the_draft_saying_why(
    member: Member, local_model: LocalModel, monkeypatch: Any
) -> None:
    task = services.task_create(member, "plan my week", 0, {
        "approval_threshold_msat": 0, "step_up_threshold_msat": 0,
    })  # fmt: skip

    def refused(*_: Any, **__: Any) -> None:
        raise services.AgentError("The model's plan is not valid JSON.")

    monkeypatch.setattr(planner, "plan_propose", refused)
    planner.plan_now(task.pk, LOCAL)
    task.refresh_from_db()
    assert task.state == TaskState.CANCELLED
    assert task.failure == f"{LOCAL} could not plan this task: The model's plan is not valid JSON."


def test_a_member_cannot_list_addresses_to_pay(
    member_client: Client, local_model: LocalModel, outside: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(tasks.plan_propose, "delay", lambda *args: None)
    new_task(member_client, template="proposed", urls="https://api.example.org/")
    assert services.policy_of(Task.objects.get()).urls == ()


def test_an_address_that_is_not_http_is_refused_and_nothing_is_created(
    owner_client: Client, local_model: LocalModel, monkeypatch: Any
) -> None:
    monkeypatch.setattr(tasks.plan_propose, "delay", lambda *args: None)
    response = new_task(owner_client, template="proposed", urls="ftp://files.example.org/")
    assert response.status_code == 400
    assert "is not an http or https address" in response.content.decode()
    assert not Task.objects.exists()
