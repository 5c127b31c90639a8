"""The other side of Nostr for tests: a NIP-46 remote signer, publishing, reading one's DMs.

The remote signer ("bunker") exists because nostr-sdk's bindings only have the client.

It speaks kind-24133 NIP-44 JSON-RPC on a relay, answers connect / get_public_key /
sign_event / ping for `user_keys`, and can "scan" a nostrconnect:// URI like a phone app.
It runs on its own thread and loop, apart from the node's relay loop, like a real signer.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from nostr_sdk import (
    Client,
    Event,
    EventBuilder,
    Filter,
    Keys,
    Kind,
    PublicKey,
    RelayUrl,
    ReqTarget,
    Tag,
    UnsignedEvent,
    UnwrappedGift,
)

NOSTR_CONNECT_KIND = 24133


class FakeSigner:
    def __init__(self, relay_url: str, user_keys: Keys, secret: str | None = None) -> None:
        self.keys = Keys.generate()  # the signer's own key; it signs for user_keys
        self.user_keys = user_keys
        self.secret = secret
        self.relay_url = relay_url
        self.methods: list[str] = []
        self._heard_from: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Future[None]] = set()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._client: Any = self._call(self._start())

    def bunker_uri(self) -> str:
        uri = f"bunker://{self.keys.public_key().to_hex()}?relay={quote(self.relay_url, safe='')}"
        return uri + (f"&secret={self.secret}" if self.secret else "")

    def scan(self, nostrconnect_uri: str, answer: str | None = None) -> None:
        """Accept a nostrconnect:// code: send `connect` whose result is its secret."""
        parts = urlsplit(nostrconnect_uri)
        secret = answer if answer is not None else parse_qs(parts.query)["secret"][0]
        self._call(self._spawn(self._announce(parts.netloc, secret)))

    def close(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> Any:
        client = Client()
        await client.add_relay(RelayUrl.parse(self.relay_url))
        await client.connect(timedelta(seconds=5))
        notes = client.notifications()
        mine = Filter().kind(Kind(NOSTR_CONNECT_KIND)).pubkey(self.keys.public_key()).limit(0)
        await client.subscribe(ReqTarget.auto([mine]))
        await self._spawn(self._serve(client, notes))
        return client

    async def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.add(asyncio.ensure_future(coro))

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.shutdown()

    async def _announce(self, client_hex: str, secret: str) -> None:
        # The app subscribes a moment after it shows the code, and relays keep no copy for
        # a late `limit 0` subscription: repeat until the app speaks (the app ignores extras).
        for _ in range(40):
            if client_hex in self._heard_from:
                return
            message = {"id": secrets.token_hex(8), "result": secret, "error": None}
            await self._send(self._client, PublicKey.parse(client_hex), message)
            await asyncio.sleep(0.25)

    async def _serve(self, client: Any, notes: Any) -> None:
        while (note := await notes.next()) is not None:
            if not note.is_new_event():
                continue
            event = note.event
            app = event.author()
            request = json.loads(self.keys.nip44_decrypt(app, event.content()))
            self._heard_from.add(app.to_hex())
            self.methods.append(request["method"])
            result, error = self._answer(request["method"], request.get("params", []))
            await self._send(client, app, {"id": request["id"], "result": result, "error": error})

    def _answer(self, method: str, params: list[str]) -> tuple[str | None, str | None]:
        if method == "connect":
            ok = self.secret is None or (len(params) > 1 and params[1] == self.secret)
            return ("ack", None) if ok else (None, "invalid secret")
        if method == "get_public_key":
            return self.user_keys.public_key().to_hex(), None
        if method == "sign_event":
            return UnsignedEvent.from_json(params[0]).sign(self.user_keys).as_json(), None
        if method == "ping":
            return "pong", None
        return None, f"unsupported method {method}"

    async def _send(self, client: Any, to: Any, message: dict[str, Any]) -> None:
        content = self.keys.nip44_encrypt(to, json.dumps(message))
        reply = EventBuilder(Kind(NOSTR_CONNECT_KIND), content).tags([Tag.public_key(to)])
        await client.send_event(reply.finalize(self.keys))


def publish(relay_url: str, event: Event) -> None:
    async def send() -> None:
        client = Client()
        await client.add_relay(RelayUrl.parse(relay_url))
        await client.connect(timedelta(seconds=5))
        output = await client.send_event(event)
        assert output.success, output.failed
        await client.shutdown()

    asyncio.run(send())


def gift_wraps_for(relay_url: str, keys: Keys) -> list[Event]:
    async def fetch() -> list[Event]:
        client = Client()
        await client.add_relay(RelayUrl.parse(relay_url))
        await client.connect(timedelta(seconds=5))
        # No `since`: gift wraps are back-dated by up to two days on purpose.
        wanted = Filter().kind(Kind(1059)).pubkey(keys.public_key())
        events = await client.fetch_events(ReqTarget.auto([wanted]), timedelta(seconds=5))
        await client.shutdown()
        return list(events)

    return asyncio.run(fetch())


def code_in_dm(relay_url: str, keys: Keys, nth: int = 1) -> str:
    """The newest login code in the person's DMs, once the nth has arrived (they leave the
    node after its answer), read and unwrapped with their own key. Other DMs to the same key
    on the same relay (an agent's, in another test) are not login codes, and are left out."""
    deadline = time.monotonic() + 20
    while len(codes := _login_codes(gift_wraps_for(relay_url, keys), keys)) < nth:
        assert time.monotonic() < deadline, f"DM number {nth} never arrived"
        time.sleep(0.1)
    newest = max(codes, key=lambda rumor: rumor.created_at().as_secs())
    match = re.search(r"\b(\d{6})\b", newest.content())
    assert match, newest.content()
    return match.group(1)


def _login_codes(wraps: list[Event], keys: Keys) -> list[Any]:
    rumors = [UnwrappedGift.from_gift_wrap(keys, wrap).rumor() for wrap in wraps]
    return [rumor for rumor in rumors if "login code" in rumor.content()]
