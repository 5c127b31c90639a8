from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.agents import live
from apps.identity import services as identity
from apps.identity.models import Role


class AgentsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Tells the agents pages which task changed: an owner hears of every task, a member of
    their own. The page then fetches the task again, with the usual checks."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.role in (Role.OWNER, Role.MEMBER)):
            await self.close(code=4403)
            return
        await self.accept()
        watched = live.OWNERS_GROUP if user.role == Role.OWNER else live.member_group(user.pk)
        self.watched_groups = [watched, identity.member_group(user.pk)]
        for group in self.watched_groups:
            await self.channel_layer.group_add(group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "watched_groups", []):  # none if refused at connect
            await self.channel_layer.group_discard(group, self.channel_name)

    async def session_end(self, event: dict[str, Any]) -> None:
        await self.close(code=4403)

    async def agents_changed(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "changed", "task_id": int(event["task_id"])})
