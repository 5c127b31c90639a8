from __future__ import annotations

from django.urls import path

from apps.system.consumers import SystemStatusConsumer

websocket_urlpatterns = [
    path("ws/system/", SystemStatusConsumer.as_asgi()),
]
