"""The SOCKS5 proxy that bunker relays are dialled through: it connects only where it checked."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

from apps.identity.addresses import Address, NotPublic, public_addresses
from apps.identity.backends.pinning_proxy import PinningProxy, relay_endpoints


async def socks_connect(
    proxy: str, host: str, port: int
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:  # noqa: E501
    """Ask the proxy for host:port by name, as the relay library does; its reply code."""
    proxy_host, proxy_port = proxy.split(":")
    reader, writer = await asyncio.open_connection(proxy_host, int(proxy_port))
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
    reply = await reader.readexactly(10)
    return reply[1], reader, writer


async def echo_server(seen: list[str]) -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append("connected")
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


def test_a_name_is_resolved_and_checked_by_the_proxy_and_a_private_answer_refused() -> None:
    seen: list[str] = []

    async def scenario() -> int:
        server = await echo_server(seen)
        port = server.sockets[0].getsockname()[1]
        proxy = PinningProxy(set())  # the real check: localhost is not public
        code, _, writer = await socks_connect(await proxy.start(), "localhost", port)
        writer.close()
        server.close()
        return code

    assert asyncio.run(scenario()) == 2  # connection not allowed
    assert seen == []


def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    seen: list[str] = []
    checked: list[str] = []

    def resolve(host: str, port: int) -> list[Address]:
        checked.append(host)
        if host != "relay.test":
            return public_addresses(host, port)
        return [ipaddress.ip_address("127.0.0.1")]  # what the check let through

    async def scenario() -> tuple[int, bytes]:
        server = await echo_server(seen)
        port = server.sockets[0].getsockname()[1]
        proxy = PinningProxy(set(), resolve=resolve)
        code, reader, writer = await socks_connect(await proxy.start(), "relay.test", port)
        writer.write(b"hello\n")
        answer = await reader.readline()
        writer.close()
        server.close()
        return code, answer

    assert asyncio.run(scenario()) == (0, b"hello\n")
    assert checked == ["relay.test"] and seen == ["connected"]


def test_the_owners_own_relays_may_be_anywhere() -> None:
    seen: list[str] = []

    def refuse_all(host: str, port: int) -> list[Address]:
        raise NotPublic(f"{host} is not a public address.")

    async def scenario() -> int:
        server = await echo_server(seen)
        port = server.sockets[0].getsockname()[1]
        trusted = relay_endpoints([f"ws://localhost:{port}"])
        proxy = PinningProxy(trusted, resolve=refuse_all)
        code, _, writer = await socks_connect(await proxy.start(), "localhost", port)
        writer.write(b"hi\n")
        await writer.drain()
        writer.close()
        server.close()
        return code

    assert asyncio.run(scenario()) == 0
