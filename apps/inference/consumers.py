from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.identity import services as identity
from apps.identity.models import Role
from apps.inference import services


class ModelDownloadsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Streams the progress of model downloads to the owner's Models page.

    On connect it sends where every listed download stands, so nothing that changed between
    the page's rendering and the socket's opening is missed.
    """

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.role == Role.OWNER):
            await self.close(code=4403)
            return
        await self.accept()
        self.watched_groups = [services.DOWNLOADS_GROUP, identity.member_group(user.pk)]
        for group in self.watched_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        for download in await database_sync_to_async(_recent_views)():
            await self.send_json({"type": "download", **download})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "watched_groups", []):  # none if refused at connect
            await self.channel_layer.group_discard(group, self.channel_name)

    async def session_end(self, event: dict[str, Any]) -> None:
        await self.close(code=4403)

    async def download_progress(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "download", **event["download"]})


def _recent_views() -> list[dict[str, Any]]:
    return [services.download_summary(download) for download in services.downloads_recent()]
