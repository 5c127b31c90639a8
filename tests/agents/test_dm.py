"""Approving a step, and receiving a result, by Nostr DM (NIP-17), through a real relay.

The owner's phone is a Nostr client with the owner's keys: it reads the node's DM, takes the
code from it and replies with a gift-wrapped DM of its own, as any NIP-17 app does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from nostr_sdk import (
    Event,
    EventBuilder,
    Keys,
    Kind,
    PublicKey,
    Tag,
    UnwrappedGift,
    nip59_make_gift_wrap,
)

from apps.agents import approvals, dm, execution, services
from apps.agents.approvals import step_gate
from apps.agents.models import (
    Approval,
    ApprovalCode,
    AuditAction,
    Lease,
    SeenMessage,
    Step,
    Task,
)
from apps.agents.states import StepState, TaskState
from apps.audit.models import AuditEvent
from apps.identity.backends import relays
from apps.identity.services import node_keys
from apps.providers.models import Provider
from tests.agents.conftest import second_opinion, steps_of
from tests.agents.listener import Listener
from tests.agents.outside import outside_rows
from tests.identity.peers import gift_wraps_for, publish

CODE = re.compile(r"^Code: ([A-Z0-9]{8})$", re.MULTILINE)


class Phone:
    """Someone's Nostr app: reads the DMs this node sent them, and replies by NIP-17."""

    def __init__(self, relay_url: str, keys: Keys, node: Keys) -> None:
        self.relay_url, self.keys, self.node = relay_url, keys, node

    def messages(self) -> list[str]:
        """What the node sent this person, oldest first (read with their own key)."""
        rumors = [
            UnwrappedGift.from_gift_wrap(self.keys, wrap)
            for wrap in gift_wraps_for(self.relay_url, self.keys)
        ]
        mine = [g.rumor() for g in rumors if g.sender().to_hex() == self.node.public_key().to_hex()]
        return [r.content() for r in sorted(mine, key=lambda r: r.created_at().as_secs())]

    def code(self) -> str:
        match = CODE.search(self.messages()[-1])
        assert match, "the last DM carries no code"
        return match.group(1)

    def reply(self, text: str) -> Event:
        return self.send_wrapped(self.keys, self.keys.public_key(), text)

    def send_wrapped(self, sealer: Keys, author: PublicKey, text: str) -> Event:
        """A gift-wrapped kind-14 message to the node, sealed by `sealer` and claiming
        `author` (the two differ only in a forgery)."""
        to = self.node.public_key()
        rumor = (
            EventBuilder(Kind(14), text).tags([Tag.public_key(to)]).finalize_unsigned(author)
        ).ensure_id()
        wrap = nip59_make_gift_wrap(sealer, to, rumor)
        publish(self.relay_url, wrap)
        return wrap


@pytest.fixture(autouse=True)
def outside(db: None) -> None:
    """The outside models the plans call, so what their steps would send can be shown."""
    outside_rows()


@pytest.fixture
def node(settings: Any, tmp_path: Path, relay_url: str) -> Keys:
    """This test's node: its own key (so DMs left on the shared relay by other tests are not
    addressed to it) and the test relay as its only relay."""
    settings.DATA_DIR = tmp_path
    settings.NOSTR_RELAYS = [relay_url]
    return node_keys()


@pytest.fixture
def phone(relay_url: str, keys: dict[str, Keys], node: Keys) -> Phone:
    return Phone(relay_url, keys["owner"], node)


@pytest.fixture
def member_phone(relay_url: str, keys: dict[str, Keys], node: Keys) -> Phone:
    return Phone(relay_url, keys["member"], node)


@pytest.fixture
def two_waiting(member: Any, owner: Any) -> tuple[Step, Step]:
    """Two outside steps of a running task, each waiting for the owner (neither above the
    step-up threshold)."""
    task = second_opinion(member, step_up_threshold_msat=100_000)
    services.plan_approve(task, member, "dashboard", digest=services.plan_digest(task))
    return _waiting(task, 2), _waiting(task, 3)


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as listening:
        yield listening


def _waiting(task: Task, position: int) -> Step:
    step = steps_of(task)[position - 1]
    assert step_gate(step).needed
    return _fresh(step)


def _fresh(step: Step) -> Step:
    return Step.objects.select_related("task").get(pk=step.pk)


def _refusals() -> int:
    return AuditEvent.objects.filter(action=AuditAction.CODE_REFUSED).count()


def _codes_out() -> int:
    return ApprovalCode.objects.filter(used_at=None, expires_at__gt=timezone.now()).count()


# --- asking -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_owner_approves_a_step_by_replying_with_the_code(
    running: Task, owner: Any, phone: Phone
) -> None:
    acme = _waiting(running, 2)
    dm.approval_request_send(acme.pk)
    phone.reply(phone.code())

    assert dm.inbox_read() == 1
    assert _fresh(acme).state == StepState.APPROVED
    running.refresh_from_db()
    assert running.state == TaskState.RUNNING
    approval = Approval.objects.get(step=acme)
    assert (approval.approved, approval.how, approval.by) == (True, "dm", owner)
    assert _codes_out() == 0


@pytest.mark.django_db
def test_the_request_names_the_task_step_and_cost_but_not_the_goal(
    running: Task, phone: Phone, member_phone: Phone
) -> None:
    dm.approval_request_send(_waiting(running, 2).pk)
    (text,) = phone.messages()
    assert f"task {running.pk} (Second opinion)" in text
    assert "Step 2: model acme/big; sends data out of the node." in text
    assert "Estimated cost: up to 40 sats." in text
    code = phone.code()
    assert f'"no {code}" to reject' in text
    assert "15 minutes" in text
    expires = ApprovalCode.objects.get().expires_at.astimezone(UTC)
    assert f"until {expires:%Y-%m-%d %H:%M} UTC" in text
    assert "good idea" not in text  # the goal stays on the node
    assert member_phone.messages() == []  # only owners approve


@pytest.mark.django_db
def test_the_request_says_how_much_text_leaves_and_what_was_redacted_never_the_text(
    running: Task, phone: Phone
) -> None:
    Task.objects.filter(pk=running.pk).update(goal="Mail bob@example.com about it")
    Step.objects.filter(task=running).update(prompt="Mail bob@example.com about it")
    acme = _waiting(running, 2)
    shown = execution.step_preview(acme)
    characters = sum(len(message["content"]) for message in shown.messages)

    dm.approval_request_send(acme.pk)

    (text,) = phone.messages()
    found = ", ".join(f"{count} {kind}" for kind, count in sorted(shown.found.items()))
    assert found  # the address was found
    assert f"Leaves the node: {characters:,} characters of text to acme; redacted: {found}." in text
    assert "bob@example.com" not in text and "Mail" not in text
    assert ApprovalCode.objects.get().leaving_digest == shown.digest


@pytest.mark.django_db
def test_a_step_whose_preview_cannot_be_made_gets_a_note_and_no_code(
    running: Task, phone: Phone
) -> None:
    acme = _waiting(running, 2)
    Provider.objects.filter(name="acme").delete()

    dm.approval_request_send(acme.pk)

    (text,) = phone.messages()
    assert "cannot be shown now" in text and "cannot be approved by DM" in text
    assert CODE.search(text) is None
    assert ApprovalCode.objects.count() == 0


@pytest.mark.django_db
def test_asked_twice_for_the_same_step_an_owner_gets_one_dm_and_one_code(
    running: Task, phone: Phone
) -> None:
    acme = _waiting(running, 2)

    dm.approval_request_send(acme.pk)
    dm.approval_request_send(acme.pk)  # a second advance run queued it again

    assert len(phone.messages()) == 1
    assert ApprovalCode.objects.count() == 1
    ApprovalCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    dm.approval_request_send(acme.pk)  # the code lapsed: a new one is sent
    assert len(phone.messages()) == 2 and ApprovalCode.objects.count() == 2


@pytest.mark.django_db
def test_a_step_above_the_step_up_threshold_gets_a_note_and_no_code(
    running: Task, phone: Phone
) -> None:
    beta = _waiting(running, 3)  # 60,000 msat, above the step-up threshold of 50,000
    dm.approval_request_send(beta.pk)
    (text,) = phone.messages()
    assert "cannot be approved by DM" in text
    assert "dashboard" in text and "shell" in text
    assert CODE.search(text) is None
    assert ApprovalCode.objects.count() == 0


@pytest.mark.django_db
def test_a_step_no_longer_waiting_gets_no_dm(running: Task, owner: Any, phone: Phone) -> None:
    acme = _waiting(running, 2)
    approvals.step_approve(acme, owner, "dashboard")
    dm.approval_request_send(acme.pk)
    assert phone.messages() == []
    assert ApprovalCode.objects.count() == 0


@pytest.mark.django_db
def test_a_relay_failure_is_logged_without_the_code_or_the_prompt(
    running: Task,
    node: Keys,
    settings: Any,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.NOSTR_RELAYS = [listener.url]  # takes connections and drops them: not a relay
    issued: list[str] = []
    code_issue = approvals.code_issue

    def code_issue_recorded(*args: Any) -> str:
        issued.append(code := code_issue(*args))
        return code

    monkeypatch.setattr(dm.approvals, "code_issue", code_issue_recorded)
    acme = _waiting(running, 2)
    with caplog.at_level(logging.WARNING):
        dm.approval_request_send(acme.pk)

    assert listener.connections >= 1
    assert len(issued) == 1
    assert "was not sent" in caplog.text
    assert issued[0] not in caplog.text
    assert acme.prompt not in caplog.text and "good idea" not in caplog.text
    assert _codes_out() == 0  # the code reached nobody: withdrawn


# --- reading replies ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_wrong_code_changes_nothing_and_is_audited(running: Task, phone: Phone) -> None:
    acme = _waiting(running, 2)
    dm.approval_request_send(acme.pk)
    right = phone.code()
    phone.reply("ABCDEFGH" if right != "ABCDEFGH" else "HGFEDCBA")

    assert dm.inbox_read() == 1
    assert _fresh(acme).state == StepState.AWAITING_APPROVAL
    assert Approval.objects.filter(step=acme).count() == 0
    assert _refusals() == 1
    assert _codes_out() == 1  # the right code still works
    phone.reply(right)
    assert dm.inbox_read() == 1
    assert _fresh(acme).state == StepState.APPROVED


@pytest.mark.django_db
def test_the_right_code_from_another_key_changes_nothing(
    running: Task, phone: Phone, keys: dict[str, Keys]
) -> None:
    acme = _waiting(running, 2)
    dm.approval_request_send(acme.pk)
    stranger = keys["stranger"]
    phone.send_wrapped(stranger, stranger.public_key(), phone.code())

    assert dm.inbox_read() == 1
    assert _fresh(acme).state == StepState.AWAITING_APPROVAL
    refusal = AuditEvent.objects.get(action=AuditAction.CODE_REFUSED)
    assert refusal.actor == stranger.public_key().to_hex()
    assert _codes_out() == 1


@pytest.mark.django_db
def test_a_message_sealed_by_another_key_claiming_the_owner_is_not_read(
    running: Task, phone: Phone, keys: dict[str, Keys]
) -> None:
    acme = _waiting(running, 2)
    dm.approval_request_send(acme.pk)
    # The rumor says it is the owner's; the seal is the stranger's: the seal decides.
    phone.send_wrapped(keys["stranger"], keys["owner"].public_key(), phone.code())

    assert dm.inbox_read() == 0
    assert _fresh(acme).state == StepState.AWAITING_APPROVAL
    assert _codes_out() == 1


@pytest.mark.django_db
def test_a_replayed_reply_changes_nothing_more(
    two_waiting: tuple[Step, Step], phone: Phone, node: Keys, relay_url: str
) -> None:
    acme, beta = two_waiting
    dm.approval_request_send(acme.pk)
    acme_code = phone.code()
    dm.approval_request_send(beta.pk)  # its code stays out, so the node keeps reading
    wrap = phone.reply(acme_code)
    assert dm.inbox_read() == 1
    assert _fresh(acme).state == StepState.APPROVED

    phone.reply(acme_code)  # the same reply sent again: a new wrap, a spent code
    assert dm.inbox_read() == 1
    assert _refusals() == 1
    publish(relay_url, wrap)  # the first wrap again
    assert dm.inbox_read() == 0
    # Even when a relay hands back wraps already read (or two workers read at once):
    secret, since = str(node.secret_key().to_hex()), int(wrap.created_at().as_secs())
    everything = relays.fetch_private_messages(secret, [relay_url], since)
    assert [message.wrap_id for message in everything].count(wrap.id().to_hex()) == 1
    assert not any(dm._reply_read(message) for message in everything)

    assert Approval.objects.filter(step=acme).count() == 1
    assert _refusals() == 1
    assert _fresh(beta).state == StepState.AWAITING_APPROVAL
    assert SeenMessage.objects.count() == 2


@pytest.mark.django_db
def test_no_and_the_code_rejects_the_step(running: Task, owner: Any, phone: Phone) -> None:
    acme = _waiting(running, 2)
    dm.approval_request_send(acme.pk)
    phone.reply(f"no {phone.code()}")

    assert dm.inbox_read() == 1
    assert _fresh(acme).state == StepState.REJECTED
    running.refresh_from_db()
    assert running.state == TaskState.FAILED
    rejection = Approval.objects.get(step=acme)
    assert (rejection.approved, rejection.how, rejection.by) == (False, "dm", owner)


@pytest.mark.django_db
def test_an_expired_code_does_nothing(two_waiting: tuple[Step, Step], phone: Phone) -> None:
    acme, beta = two_waiting
    dm.approval_request_send(acme.pk)
    acme_code = phone.code()
    ApprovalCode.objects.filter(step=acme).update(expires_at=timezone.now() - timedelta(seconds=1))
    dm.approval_request_send(beta.pk)  # another code out: the node still reads its DMs
    phone.reply(acme_code)

    assert dm.inbox_read() == 1
    assert _fresh(acme).state == StepState.AWAITING_APPROVAL
    assert _refusals() == 1
    assert Approval.objects.count() == 1  # the plan's, from the member: nothing by DM


@pytest.mark.django_db
def test_with_no_code_out_the_node_does_not_ask_its_relays(
    running: Task, owner: Any, node: Keys, settings: Any, listener: Listener
) -> None:
    settings.NOSTR_RELAYS = [listener.url]
    acme = _waiting(running, 2)
    assert dm.inbox_read() == 0  # no code at all
    approvals.code_issue(acme, owner)
    ApprovalCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert dm.inbox_read() == 0  # only an expired one
    assert listener.connections == 0

    approvals.code_issue(acme, owner)  # a code out: now it does ask (and finds no relay)
    assert dm.inbox_read() == 0
    asked = listener.connections
    assert asked >= 1

    approvals.step_approve(_fresh(acme), owner, "dashboard")  # decided elsewhere meanwhile
    assert _codes_out() == 1
    assert dm.inbox_read() == 0
    assert listener.connections == asked


@pytest.mark.django_db
def test_while_another_worker_reads_the_dms_a_read_is_skipped(
    running: Task, owner: Any, node: Keys, settings: Any, listener: Listener
) -> None:
    settings.NOSTR_RELAYS = [listener.url]
    approvals.code_issue(_waiting(running, 2), owner)
    other = dm.lease_take(dm.INBOX_LEASE, 60)
    assert other is not None and dm.lease_take(dm.INBOX_LEASE, 60) is None

    assert dm.inbox_read() == 0
    assert listener.connections == 0  # the relays were not asked twice at once

    dm.lease_give_back(dm.INBOX_LEASE, other)
    assert dm.inbox_read() == 0
    assert listener.connections >= 1
    assert dm.lease_take(dm.INBOX_LEASE, 60) is not None  # the read gave it back


@pytest.mark.django_db
def test_a_lease_not_given_back_lapses(db: None) -> None:
    assert dm.lease_take("test", 60) is not None
    Lease.objects.filter(name="test").update(until=timezone.now() - timedelta(seconds=1))
    assert dm.lease_take("test", 60) is not None


@pytest.mark.django_db
def test_wraps_read_before_any_read_reaches_back_are_forgotten(db: None) -> None:
    reach = approvals.CODE_LIFETIME + dm.CLOCK_SLACK + relays.GIFT_WRAP_BACKDATING
    old = SeenMessage.objects.create(wrap_id="a" * 64)
    kept = SeenMessage.objects.create(wrap_id="b" * 64)
    SeenMessage.objects.filter(pk=old.pk).update(
        seen_at=timezone.now() - reach - dm.SEEN_MARGIN - timedelta(minutes=1)
    )
    SeenMessage.objects.filter(pk=kept.pk).update(seen_at=timezone.now() - reach)

    assert dm.seen_prune() == 1
    assert list(SeenMessage.objects.values_list("wrap_id", flat=True)) == ["b" * 64]


def test_the_inbox_schedule_drops_a_read_that_did_not_start_in_time() -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["agents-inbox"]
    assert entry["options"]["expires"] <= entry["schedule"]


# --- results ------------------------------------------------------------------------------

PREIMAGE = "ab" * 32
PAYMENT_HASH = "cd" * 32


def _done(task: Task, *, result_by_dm: bool = True) -> Task:
    Task.objects.filter(pk=task.pk).update(
        state=TaskState.DONE,
        result_by_dm=result_by_dm,
        result_text="The answer is 42.",
        result_cost_msat=140_500,
        result_provenance={
            "models": ["acme/big", "smollm2"],
            "providers": ["acme"],
            "receipts": [
                {
                    "step": 2,
                    "purpose": f"agent:{task.pk}:step:2",
                    "payment_hash": PAYMENT_HASH,
                    "amount_msat": 40_000,
                    "preimage": PREIMAGE,  # never sent, even if a receipt carried it
                }
            ],
        },
    )
    task.refresh_from_db()
    return task


@pytest.mark.django_db
def test_the_result_reaches_the_asker_with_its_cost_and_no_preimage(
    running: Task, member_phone: Phone, phone: Phone
) -> None:
    task = _done(running)
    dm.result_send(task.pk)
    (text,) = member_phone.messages()
    assert f"task {task.pk} (Second opinion) is done." in text
    assert "The answer is 42." in text
    assert "Cost: 140.5 sats." in text
    assert "Models: acme/big, smollm2." in text and "Providers: acme." in text
    assert f"- step 2: {PAYMENT_HASH}, 40 sats" in text
    assert PREIMAGE not in text
    assert phone.messages() == []  # the owner did not ask: the result is the member's


@pytest.mark.django_db
def test_no_result_dm_unless_asked_for_and_done(running: Task, member_phone: Phone) -> None:
    dm.result_send(_done(running, result_by_dm=False).pk)
    Task.objects.filter(pk=running.pk).update(state=TaskState.RUNNING, result_by_dm=True)
    dm.result_send(running.pk)
    assert member_phone.messages() == []


@pytest.mark.django_db
def test_a_long_result_is_cut_to_fit_a_dm(running: Task, member_phone: Phone) -> None:
    task = _done(running)
    Task.objects.filter(pk=task.pk).update(result_text="é" * 40_000)  # 80,000 bytes
    dm.result_send(task.pk)
    (text,) = member_phone.messages()
    assert "é" * 1000 in text
    assert "the whole result is on the dashboard" in text
