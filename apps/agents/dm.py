"""Approvals and results by Nostr DM (NIP-17), from the node's own key (the DM part).

Each owner is sent a short single-use code for a step waiting for approval: replying with the
code alone approves it, `no <code>` rejects it (`approvals.code_redeem` decides, and audits what
it refuses). A step over the step-up threshold gets no code, only a note: it needs a fresh
signature in the dashboard, or the shell. The node reads its DMs from its relays only while a
code for a step still waiting is out, so an idle node makes no relay traffic. A task's result
goes to whoever asked, when they asked for it.

DMs name a task by its number and template, never by its goal, and logs name neither the code
nor any text: only which DM failed and why.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.agents import approvals
from apps.agents.models import ApprovalCode, Lease, SeenMessage, Step, Task
from apps.agents.services import AgentError
from apps.agents.states import StepState, TaskState
from apps.agents.templates import TEMPLATES
from apps.identity.backends import relays
from apps.identity.backends.base import ReceivedMessage, RelayError
from apps.identity.models import Member, Role
from apps.identity.services import node_keys
from apps.inference import pipeline

log = logging.getLogger(__name__)

# A phone's clock may be behind the node's: read replies stamped a little before the code.
CLOCK_SLACK = timedelta(hours=1)
# Relays take events up to about 64 KiB, and a DM's text is encrypted twice (seal, then wrap),
# each time padded up to a NIP-44 size bucket and base64-encoded: 16 KB stays well inside.
RESULT_MAX_BYTES = 16_000
# One worker reads the relays at a time; a read takes a few seconds, at most about 7.
INBOX_LEASE = "agents-inbox"
INBOX_LEASE_TIME = 60.0
# Wraps read are remembered a day past the farthest a read reaches back.
SEEN_MARGIN = timedelta(days=1)


# --- approval requests ----------------------------------------------------------------------


def approval_request_send(step_id: int) -> None:
    """DM each owner a single-use code for this waiting step: task, step, cost, what would
    leave (how much text, what was redacted: never the text), code. An owner who already has
    a code out for it is not sent another (two workers may ask at once)."""
    step = Step.objects.select_related("task").filter(pk=step_id).first()
    if step is None or step.state != StepState.AWAITING_APPROVAL:
        return
    gate = approvals.step_needs_approval(step)
    try:
        preview = None if gate.step_up else approvals.leaving_preview(step)
    except AgentError as unknown:  # no code: approving must not send what nobody was shown
        for owner in _owners():
            _send(owner, _no_preview_notice(step, gate.reason, str(unknown)), "approval notice")
        return
    for owner in _owners():
        if gate.step_up:
            _send(owner, _step_up_notice(step, gate.reason), f"step-up notice for step {step.pk}")
            continue
        try:
            code = _code_new(step, owner, preview)
        except AgentError:
            return  # decided meanwhile (in the dashboard): nothing left to ask
        if code is None:
            continue  # a code is out for this owner already
        text = _approval_request(step, gate.reason, code, owner, preview)
        if not _send(owner, text, "approval code"):
            _code_withdraw(step, owner)


def _owners() -> list[Member]:
    return list(Member.objects.filter(role=Role.OWNER, is_active=True).order_by("pk"))


def _code_new(step: Step, owner: Member, preview: pipeline.Preview | None) -> str | None:
    """A new code for `owner`, or None when one not used and not expired is out already; the
    step's row is held while looking, so two senders at once issue one code."""
    with transaction.atomic():
        Step.objects.select_for_update().filter(pk=step.pk).values_list("pk", flat=True).get()
        out = ApprovalCode.objects.filter(
            step=step, approver=owner, used_at=None, expires_at__gt=timezone.now()
        )
        if out.exists():
            return None
        return approvals.code_issue(step, owner, preview)


def _approval_request(
    step: Step, reason: str, code: str, owner: Member, preview: pipeline.Preview | None
) -> str:
    expires = _code_expiry(step, owner)
    minutes = int(approvals.CODE_LIFETIME.total_seconds() // 60)
    return "\n".join(
        [
            f"Sovereign: {_task_name(step.task)} waits for your approval ({reason}).",
            _step_line(step),
            f"Estimated cost: up to {_sats(step.estimated_cost_msat)}.",
            *_leaving_lines(preview),
            "",
            f"Code: {code}",
            "",
            f'Reply with the code alone to approve, or "no {code}" to reject. It works once, '
            f"only from your own Nostr account, for {minutes} minutes "
            f"(until {expires:%Y-%m-%d %H:%M} UTC).",
        ]
    )


def _leaving_lines(preview: pipeline.Preview | None) -> list[str]:
    """How much would leave and what was taken out of it, never the text itself: approving
    by the code lets exactly this leave, or nothing."""
    if preview is None or not preview.outside:
        return []
    characters = sum(len(message.get("content", "")) for message in preview.messages)
    if preview.trusted:
        redacted = "nothing redacted (a trusted provider)"
    elif preview.found:
        found = ", ".join(f"{count} {kind}" for kind, count in sorted(preview.found.items()))
        redacted = f"redacted: {found}"
    else:
        redacted = "nothing found to redact"
    return [
        f"Leaves the node: {characters:,} characters of text to {preview.provider}; {redacted}. "
        "The dashboard shows the text."
    ]


def _no_preview_notice(step: Step, reason: str, why: str) -> str:
    return "\n".join(
        [
            f"Sovereign: {_task_name(step.task)} waits for your approval ({reason}).",
            _step_line(step),
            f"Estimated cost: up to {_sats(step.estimated_cost_msat)}.",
            "",
            f"{why} So it cannot be approved by DM: decide in the dashboard or from the shell.",
        ]
    )


def _step_up_notice(step: Step, reason: str) -> str:
    return "\n".join(
        [
            f"Sovereign: {_task_name(step.task)} waits for your approval ({reason}).",
            _step_line(step),
            f"Estimated cost: up to {_sats(step.estimated_cost_msat)}.",
            "",
            "This costs more than the step-up threshold, so it cannot be approved by DM: "
            "approve or reject it in the dashboard (you will sign in again), or from the shell.",
        ]
    )


def _code_expiry(step: Step, owner: Member) -> datetime:
    newest = ApprovalCode.objects.filter(step=step, approver=owner).order_by("-pk").first()
    expires = newest.expires_at if newest else timezone.now() + approvals.CODE_LIFETIME
    return expires.astimezone(UTC)


def _code_withdraw(step: Step, owner: Member) -> None:
    # The code reached nobody: let it lapse now rather than keep the node reading its DMs.
    unused = ApprovalCode.objects.filter(step=step, approver=owner, used_at=None)
    newest = unused.order_by("-pk").first()
    if newest is not None:
        unused.filter(pk=newest.pk).update(expires_at=timezone.now())


# --- reading replies ------------------------------------------------------------------------


def inbox_read() -> int:
    """Read the DMs sent to the node since last time and redeem approval codes; how many
    replies were read. Skipped while another worker reads (a slow relay's read outlasts the
    schedule's interval, and reads must not pile up in the worker's few slots)."""
    now = timezone.now()
    out = ApprovalCode.objects.filter(
        used_at=None, expires_at__gt=now, step__state=StepState.AWAITING_APPROVAL
    )
    oldest = out.order_by("created_at").values_list("created_at", flat=True).first()
    if oldest is None:
        return 0  # no code out for a waiting step: nothing to wait for, so no relay is asked
    holder = lease_take(INBOX_LEASE, INBOX_LEASE_TIME)
    if holder is None:
        return 0
    try:
        return _replies_read(oldest)
    finally:
        lease_give_back(INBOX_LEASE, holder)


def _replies_read(oldest: datetime) -> int:
    since = oldest - CLOCK_SLACK
    # Wraps read before are not opened again (a relay's time window reaches back this far).
    window = since - relays.GIFT_WRAP_BACKDATING
    read = set(SeenMessage.objects.filter(seen_at__gte=window).values_list("wrap_id", flat=True))
    try:
        secret = str(node_keys().secret_key().to_hex())
        messages = relays.fetch_private_messages(
            secret, settings.NOSTR_RELAYS, int(since.timestamp()), skip=read
        )
    except (RelayError, ValueError, RuntimeError) as error:
        log.warning("The node's DMs could not be read: %s", error)
        return 0
    return sum(_reply_read(message) for message in messages)


def lease_take(name: str, seconds: float) -> str | None:
    """Hold the lease `name` for `seconds` if nobody holds it; the holder's token, or None."""
    now = timezone.now()
    Lease.objects.get_or_create(name=name, defaults={"until": now})
    holder = secrets.token_hex(8)
    free = Lease.objects.filter(name=name, until__lte=now)
    taken = free.update(holder=holder, until=now + timedelta(seconds=seconds))
    return holder if taken else None


def lease_give_back(name: str, holder: str) -> None:
    Lease.objects.filter(name=name, holder=holder).update(until=timezone.now())


def seen_prune() -> int:
    """Forget wraps read so long ago that no read reaches back to them (the oldest code out
    is younger than its lifetime, and a read reaches back the clock slack and the wraps'
    back-dating); how many were forgotten."""
    reach = approvals.CODE_LIFETIME + CLOCK_SLACK + relays.GIFT_WRAP_BACKDATING
    before = timezone.now() - reach - SEEN_MARGIN
    deleted, _ = SeenMessage.objects.filter(seen_at__lt=before).delete()
    return deleted


def _reply_read(message: ReceivedMessage) -> bool:
    """Redeem one reply, once: the wrap is recorded as read in the same transaction, so a
    relay sending it again, or two workers reading at once, change nothing more."""
    with transaction.atomic():
        _, first_time = SeenMessage.objects.get_or_create(wrap_id=message.wrap_id)
        if not first_time:
            return False
        approvals.code_redeem(message.sender, message.content)
    return True


# --- results --------------------------------------------------------------------------------


def result_send(task_id: int) -> None:
    """DM the asker the task's result, cost and receipts (when they asked for it)."""
    task = Task.objects.select_related("asked_by").filter(pk=task_id).first()
    if task is None or not task.result_by_dm or task.state != TaskState.DONE:
        return
    _send(task.asked_by, _result_message(task), f"result of task {task.pk}")


def _result_message(task: Task) -> str:
    provenance = task.result_provenance if isinstance(task.result_provenance, dict) else {}
    lines = [
        f"Sovereign: {_task_name(task)} is done.",
        "",
        _cut(task.result_text),
        "",
        f"Cost: {_sats(task.result_cost_msat)}.",
        f"Models: {_listed(provenance.get('models'))}.",
        f"Providers: {_listed(provenance.get('providers'))}.",
    ]
    receipts = [_receipt_line(r) for r in provenance.get("receipts") or [] if isinstance(r, dict)]
    if receipts:
        lines += ["Receipts (payment hashes):", *receipts]
    return "\n".join(lines)


def _receipt_line(receipt: dict[str, object]) -> str:
    # Named fields only: a receipt's preimage is the proof of payment, and stays on the node.
    amount = receipt.get("amount_msat")
    cost = f", {_sats(amount)}" if isinstance(amount, int) else ""
    return f"- step {receipt.get('step')}: {receipt.get('payment_hash')}{cost}"


def _cut(text: str) -> str:
    encoded = text.encode()
    if len(encoded) <= RESULT_MAX_BYTES:
        return text
    kept = encoded[:RESULT_MAX_BYTES].decode(errors="ignore")
    return f"{kept}\n\n(Cut short here: the whole result is on the dashboard.)"


# --- shared -------------------------------------------------------------------------------


def _send(to: Member, text: str, what: str) -> bool:
    """DM `text` from the node to `to`; False, logged without the text, when it failed."""
    try:
        secret = str(node_keys().secret_key().to_hex())
        relays.send_private_message(secret, to.pubkey, text, settings.NOSTR_RELAYS)
    except (RelayError, ValueError, RuntimeError) as error:
        log.warning("A DM (%s) to member %s was not sent: %s", what, to.pk, error)
        return False
    return True


def _task_name(task: Task) -> str:
    template = TEMPLATES.get(task.template)
    return f"task {task.pk} ({template.title if template else 'own plan'})"


def _step_line(step: Step) -> str:
    if step.kind == Step.Kind.PAID_HTTP:
        what = f"a paid request to {step.url}"
    else:
        what = f"model {step.model}"
    leaves = "sends data out of the node" if step.leaves_node else "nothing leaves the node"
    return f"Step {step.position}: {what}; {leaves}."


def _sats(msat: int) -> str:
    sats = f"{msat / 1000:,.3f}".rstrip("0").rstrip(".")
    return f"{sats} sat" if sats == "1" else f"{sats} sats"


def _listed(names: object) -> str:
    if not isinstance(names, list) or not names:
        return "none"
    return ", ".join(str(name) for name in names)
