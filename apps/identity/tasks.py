from __future__ import annotations

from celery import shared_task

from apps.identity import services


@shared_task(name="identity.profile_refresh")
def profile_refresh(member_id: int) -> None:
    services.profile_refresh(member_id)
