from __future__ import annotations

from django.urls import path

from apps.agents.consumers import AgentsConsumer
from apps.inference.consumers import ModelDownloadsConsumer
from apps.system.consumers import SystemStatusConsumer

websocket_urlpatterns = [
    path("ws/system/", SystemStatusConsumer.as_asgi()),
    path("ws/models/downloads/", ModelDownloadsConsumer.as_asgi()),
    path("ws/agents/", AgentsConsumer.as_asgi()),
]
