"""An OpenAI-compatible server on the home network (another Sovereign node, llama.cpp's server,
Ollama, LocalAI): nothing to pay, an API key if it asks for one."""

from __future__ import annotations

from apps.providers.backends.base import Authorization, Call, Kind


class HomeNetworkKind(Kind):
    async def credentials(self, call: Call) -> Authorization:
        return self.credentials_now(call)

    def credentials_now(self, call: Call) -> Authorization:
        key = call.provider.api_key
        return Authorization({"Authorization": f"Bearer {key}"} if key else {})
