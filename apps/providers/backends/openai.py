"""An OpenAI-compatible server on the home network (another Sovereign node, llama.cpp's server,
Ollama, LocalAI): nothing to pay, an API key if it asks for one."""

from __future__ import annotations

from asgiref.sync import sync_to_async

from apps.providers.backends.base import Authorization, Call, Kind


class HomeNetworkKind(Kind):
    async def credentials(self, call: Call) -> Authorization:
        from apps.providers.services import api_key_of

        key = await sync_to_async(api_key_of)(call.provider.id)
        return Authorization({"Authorization": f"Bearer {key}"} if key else {})
