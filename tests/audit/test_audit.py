"""The shared audit trail: an open set of actions, labels from each part, rows that live and
die with the change they record, and the move from identity that kept every row."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor

from apps.audit import services as audit
from apps.audit.models import AuditEvent

IDENTITY_BEFORE_THE_MOVE = ("identity", "0002_member_checklist_dismissed_at")


@pytest.fixture
def labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry as the apps left it, restored afterwards."""
    monkeypatch.setattr(audit, "_labels", dict(audit._labels))
    monkeypatch.setattr(audit, "_folded", set(audit._folded))


@pytest.mark.django_db
def test_a_new_action_is_recorded_without_a_migration_and_shown_by_its_name() -> None:
    audit.audit_record("provider_added", actor="shell", subject="routstr", detail="from the page")

    row = audit.audit_rows()[0]

    assert AuditEvent.objects.get().action == "provider_added"
    assert (row.action, row.who, row.about, row.detail) == (
        "Provider added",
        "shell",
        "routstr",
        "from the page",
    )


@pytest.mark.django_db
def test_a_label_registered_by_a_part_is_what_people_read(labels: None) -> None:
    audit.labels_register({"agent.step_approved": "Step approved by a person"})
    audit.audit_record("agent.step_approved", actor="member:3")
    audit.audit_record("agent.step_refused", actor="member:3")

    assert [row.action for row in audit.audit_rows()] == [
        "Agent step refused",
        "Step approved by a person",
    ]


@pytest.mark.django_db
def test_the_parts_register_their_labels_when_the_project_starts() -> None:
    audit.audit_record("apikey_created", actor="shell")
    audit.audit_record("payment_reserved", actor="member:3")

    assert [row.action for row in audit.audit_rows()] == ["Payment reserved", "API key created"]


@pytest.mark.parametrize("name", ["", "Payment_Sent", "payment sent", "1st_payment", "a" * 41])
def test_an_action_that_is_not_a_short_lower_case_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="short lower-case name"):
        audit.audit_record(name)


@pytest.mark.django_db
def test_a_long_detail_is_cut_and_the_change_it_records_still_happens() -> None:
    audit.audit_record("note_written", subject="s" * 500, detail="d" * 1000)

    event = AuditEvent.objects.get()

    assert (len(event.subject), len(event.detail)) == (200, 300)


@pytest.mark.django_db
def test_the_audit_row_is_rolled_back_with_the_change_it_records() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.audit_record("budget_changed", actor="member:3", detail="10000 msat a day")
        raise RuntimeError("the change itself failed after the audit row was written")

    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_anonymous_runs_of_a_folded_action_are_one_line_and_others_are_not(labels: None) -> None:
    audit.labels_register({"door_knocked": "Someone knocked"}, folded=["door_knocked"])
    for _ in range(3):
        audit.audit_record("door_knocked", detail="at the front")
    audit.audit_record("door_knocked", actor="shell")
    for _ in range(2):
        audit.audit_record("code_sent", subject="f" * 64)

    rows = audit.audit_rows()

    assert [(row.action, row.who, row.count) for row in rows] == [
        ("Login code sent", "the node", 1),
        ("Login code sent", "the node", 1),
        ("Someone knocked", "shell", 1),
        ("Someone knocked", audit.NOBODY, 3),
    ]
    assert rows[0].about.startswith("npub1") and rows[-1].detail == ""


@pytest.mark.django_db(transaction=True)
def test_moving_the_trail_out_of_identity_keeps_every_row() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([IDENTITY_BEFORE_THE_MOVE, ("audit", None)])
    old_apps: Any = executor.loader.project_state(IDENTITY_BEFORE_THE_MOVE).apps
    old_apps.get_model("identity", "AuditEvent").objects.create(
        action="login", actor="a" * 64, detail="extension"
    )

    executor = MigrationExecutor(connection)  # the graph again, as `migrate` reads it
    executor.migrate(executor.loader.graph.leaf_nodes())

    event = AuditEvent.objects.get()
    assert (event.action, event.actor, event.detail) == ("login", "a" * 64, "extension")
    assert audit.audit_rows()[0].action == "Logged in"
