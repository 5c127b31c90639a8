"""One audit trail for every part: each writes its own actions beside the change they record.

The set of actions is open. A part names its actions (`payment_sent`, `provider_added`) and
gives them labels for people from its AppConfig.ready(); an action without a label is still
recorded and shown, under a readable form of its name.

audit_record() only creates the row, so it belongs to whatever transaction the caller has open:
a caller wraps its change and the audit write in one `transaction.atomic()`, and a change that
is rolled back leaves no audit row claiming it happened.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from nostr_sdk import PublicKey

from apps.audit.models import ACTION_PATTERN, AuditEvent

NOBODY = "nobody logged in"

_action_name = re.compile(ACTION_PATTERN)
_labels: dict[str, str] = {}
# Actions anyone can cause without logging in (a refused login): a run of them by nobody in
# particular is one line of the audit page, so a flood cannot bury everything else.
_folded: set[str] = set()
# Longer values are cut rather than refused: the change being audited must not fail for it.
_LENGTHS = {field.name: field.max_length for field in AuditEvent._meta.concrete_fields}


def audit_record(action: str, *, actor: str = "", subject: str = "", detail: str = "") -> None:
    """Write one audit row in the caller's transaction. Never pass secrets (preimages, keys,
    whole invoices) or what people wrote (prompts, answers) as the subject or detail."""
    _check_name(action)
    AuditEvent.objects.create(
        action=str(action),
        actor=actor[: _LENGTHS["actor"]],
        subject=subject[: _LENGTHS["subject"]],
        detail=detail[: _LENGTHS["detail"]],
    )


def labels_register(labels: Mapping[str, str], *, folded: Iterable[str] = ()) -> None:
    """A part's actions and their labels for people; `folded` are those whose runs by nobody
    logged in are shown as one line."""
    for action in [*labels, *folded]:
        _check_name(action)
    _labels.update({str(action): label for action, label in labels.items()})
    _folded.update(str(action) for action in folded)


def action_label(action: str) -> str:
    """The registered label, or the name made readable: "payment_sent" is "Payment sent"."""
    if action in _labels:
        return _labels[action]
    return re.sub(r"[._]+", " ", action).strip().capitalize()


def _check_name(action: str) -> None:
    if not _action_name.fullmatch(action):
        raise ValueError(
            f"An audit action is a short lower-case name such as 'payment_sent', not {action!r}."
        )


@dataclass(frozen=True)
class AuditRow:
    """One line of the audit view: an event, or a run of anonymous events of a folded action."""

    at: datetime
    action: str
    who: str
    about: str
    detail: str
    count: int = 1


def audit_rows(limit: int = 100, scanned: int = 2000) -> list[AuditRow]:
    """The newest audit events for people to read: labels for actions, keys as npubs, and runs
    of folded actions by nobody in particular as one line each, so they cannot bury the rest."""
    rows: list[AuditRow] = []
    for event in AuditEvent.objects.all()[:scanned]:
        label = action_label(event.action)
        anonymous_folded = event.action in _folded and not event.actor
        if anonymous_folded and rows and (rows[-1].who, rows[-1].action) == (NOBODY, label):
            rows[-1] = replace(rows[-1], count=rows[-1].count + 1, detail="")
            continue
        if len(rows) == limit:
            break
        who = NOBODY if anonymous_folded else _readable_name(event.actor)
        rows.append(AuditRow(event.at, label, who, _readable_name(event.subject), event.detail))
    return rows


def _readable_name(value: str) -> str:
    """A key as a short npub; "shell", "member:3" and other words as they are."""
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        npub = str(PublicKey.parse(value).to_bech32())
        return f"{npub[:12]}…{npub[-6:]}"
    return value or "the node"
