"""A SOCKS5 proxy on loopback through which the node dials relays that a stranger named.

A pasted `bunker://` address names relays of its author's choosing. The relay library would
resolve their names again when it connects, so a name that answered with a public address
when it was checked could answer with a private one a moment later. Through this proxy the
name is resolved once, every address it gives is checked, and the connection goes to one of
those very addresses. Relays the owner configured (SOVEREIGN_NOSTR_RELAYS) may be anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from collections.abc import Callable, Collection
from urllib.parse import urlsplit

from apps.identity.addresses import Address, NotPublic, public_addresses

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[Address]]
SOCKS_VERSION = 5
CONNECT = 1
SUCCEEDED, NOT_ALLOWED, UNREACHABLE, NOT_SUPPORTED = 0, 2, 4, 7
IPV4, DOMAIN, IPV6 = 1, 3, 4
CONNECT_SECONDS = 10.0


def relay_endpoints(relay_urls: Collection[str]) -> set[tuple[str, int]]:
    """(host, port) of each relay URL, with the scheme's default port."""
    endpoints = set()
    for url in relay_urls:
        parts = urlsplit(url)
        if parts.hostname:
            endpoints.add((parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)))
    return endpoints


class PinningProxy:
    """SOCKS5 CONNECT only, no authentication, listening on 127.0.0.1 of its own loop."""

    def __init__(
        self, configured: set[tuple[str, int]], resolve: Resolver = public_addresses
    ) -> None:
        self.configured, self.resolve = configured, resolve
        self.address = ""  # host:port once started
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        if self._server is None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            host, port = self._server.sockets[0].getsockname()[:2]
            self.address = f"{host}:{port}"
        return self.address

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await self._open(reader, writer)
            if upstream is not None:
                await _pipe(reader, writer, *upstream)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    async def _open(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        host, port = await _handshake(reader, writer)
        try:
            address = await self._checked_address(host, port)
        except NotPublic as refusal:
            logger.info("Refused a relay connection: %s", refusal)
            await _reply(writer, NOT_ALLOWED)
            return None
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection(str(address), port), CONNECT_SECONDS
            )
        except (OSError, TimeoutError):
            await _reply(writer, UNREACHABLE)
            return None
        await _reply(writer, SUCCEEDED)
        return upstream

    async def _checked_address(self, host: str, port: int) -> Address:
        if (host, port) in self.configured:
            return ipaddress.ip_address(await _resolve_any(host, port))
        addresses = await asyncio.to_thread(self.resolve, host, port)
        return addresses[0]


async def _resolve_any(host: str, port: int) -> str:
    answers = await asyncio.get_running_loop().getaddrinfo(host, port)
    return str(answers[0][4][0]).split("%")[0]


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int]:
    """The client's greeting and CONNECT request; the (host, port) it asks for."""
    version, methods = await reader.readexactly(2)
    await reader.readexactly(methods)
    if version != SOCKS_VERSION:
        raise ValueError("Not SOCKS5.")
    writer.write(bytes([SOCKS_VERSION, 0]))  # no authentication
    version, command, _, kind = await reader.readexactly(4)
    if command != CONNECT:
        await _reply(writer, NOT_SUPPORTED)
        raise ValueError("Only CONNECT is supported.")
    if kind == IPV4:
        host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
    elif kind == IPV6:
        host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
    elif kind == DOMAIN:
        host = (await reader.readexactly((await reader.readexactly(1))[0])).decode("idna")
    else:
        await _reply(writer, NOT_SUPPORTED)
        raise ValueError("Unknown address type.")
    (port,) = struct.unpack("!H", await reader.readexactly(2))
    return host, port


async def _reply(writer: asyncio.StreamWriter, code: int) -> None:
    writer.write(bytes([SOCKS_VERSION, code, 0, IPV4, 0, 0, 0, 0, 0, 0]))
    await writer.drain()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    async def copy(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(1 << 16):
                target.write(data)
                await target.drain()
        finally:
            with contextlib.suppress(OSError):
                target.close()

    await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer))
