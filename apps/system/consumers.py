from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from apps.identity import services as identity
from apps.identity.models import Role
from apps.system import services


class SystemStatusConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Streams the node's status to the System page.

    The worker's events arrive through the channel layer and trigger a refresh at once;
    a periodic refresh catches what no event announces, such as a worker killed outright.
    """

    async def connect(self) -> None:
        self.last_status: dict[str, Any] | None = None
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.role in (Role.OWNER, Role.MEMBER)):
            await self.close(code=4403)
            return
        await self.accept()
        self.watched_groups = [services.SYSTEM_GROUP, identity.member_group(user.pk)]
        for group in self.watched_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.refresher = asyncio.create_task(self._refresh_forever())

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "refresher"):
            return  # refused at connect
        self.refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.refresher
        for group in self.watched_groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def session_end(self, event: dict[str, Any]) -> None:
        # Removed, or no longer in a role that may watch: the page must reconnect.
        await self.close(code=4403)

    async def system_event(self, event: dict[str, Any]) -> None:
        if event["kind"] == "probe":
            await self.send_json({"type": "probe", **event["data"]})
        await self._send_status_if_changed()

    async def _refresh_forever(self) -> None:
        while True:
            await self._send_status_if_changed()
            await asyncio.sleep(settings.HEARTBEAT_SECONDS)

    async def _send_status_if_changed(self) -> None:
        status = await database_sync_to_async(services.status_snapshot)()
        if status != self.last_status:
            self.last_status = status
            await self.send_json({"type": "status", **status})
