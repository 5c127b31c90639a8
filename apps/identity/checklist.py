"""The owner's first-run checklist: what a new node still needs, read from each part's services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from apps.identity.models import Invite, Member, Role
from apps.inference import services as inference
from apps.providers import services as providers
from apps.wallet import services as wallet


@dataclass(frozen=True)
class ChecklistItem:
    key: str
    title: str
    done: bool
    detail: str
    # False for a step the node cannot take yet: shown, never ticked, never blocking.
    available: bool = True


def checklist_items() -> list[ChecklistItem]:
    return [_local_model(), _lightning(), _household(), _outside_provider()]


def checklist_complete(items: list[ChecklistItem]) -> bool:
    return all(item.done for item in items if item.available)


def checklist_pending(owner: Member) -> bool:
    """Whether the owner's first page is still the checklist rather than the chat."""
    if owner.checklist_dismissed_at is not None:
        return False
    if checklist_complete(checklist_items()):
        # Done once is done: the owner is not sent back when the engine restarts or the
        # Lightning node is slow to answer, and "/" no longer asks each part every visit.
        checklist_dismiss(owner)
        return False
    return True


def checklist_dismiss(owner: Member) -> None:
    Member.objects.filter(pk=owner.pk, checklist_dismissed_at=None).update(
        checklist_dismissed_at=timezone.now()
    )


def _local_model() -> ChecklistItem:
    models = inference.model_count()
    engine_up, engine_detail = inference.engine_state()
    on_disk = f"{models} model{'s' if models != 1 else ''} on disk"
    if not models:
        detail = "No model yet: add a GGUF file on the Models page, from a URL or from this box."
    elif not engine_up:
        detail = f"{on_disk}, but the engine is not up yet. {engine_detail}"
    else:
        detail = f"{on_disk}, and the engine answers."
    return ChecklistItem("model", "A local model is ready", bool(models) and engine_up, detail)


def _lightning() -> ChecklistItem:
    # Without the setting there is no node to ask; asking would only wait for nothing.
    summary: dict[str, Any] = (
        wallet.node_summary() if wallet.node_configured() else {"connected": False}
    )
    if summary.get("connected"):
        detail = f"Connected to {summary.get('alias') or 'the node'} on {summary.get('network')}."
    else:
        detail = str(summary.get("error") or "No Lightning node is set up yet.")
    return ChecklistItem("lightning", "Connect Lightning", bool(summary.get("connected")), detail)


def _household() -> ChecklistItem:
    others = Member.objects.exclude(role=Role.OWNER).count()
    invited = Invite.objects.exists()
    if others:
        detail = f"{others} other person(s) on this node."
    elif invited:
        detail = "An invite link was made."
    else:
        detail = "Add members and friends by their npub, or send an invite link."
    return ChecklistItem("household", "Invite the household", bool(others or invited), detail)


def _outside_provider() -> ChecklistItem:
    names = [provider.name for provider in providers.providers_list()]
    if names:
        detail = f"Stronger models from {', '.join(names)}, paid per request over Lightning."
    else:
        detail = (
            "Optional: a provider of stronger models, paid per request over Lightning, for "
            "what the local model cannot do. Add one on the Providers page."
        )
    return ChecklistItem("provider", "Add an outside provider", bool(names), detail)
