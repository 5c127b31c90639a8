"""Which hosts the node may dial for a stranger's sake: public addresses only.

A name is resolved and every address it gives is checked, so the spellings that reach
loopback or the home network without looking like it (`127.1`, `0x7f000001`, `2130706433`,
`localhost.`, a name pointing at 192.168.x.x) are refused like the plain ones.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket

RESOLVE_SECONDS = 3.0
_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class NotPublic(Exception):
    """The host is private, local, unknown or too slow to resolve; the message says which."""


def public_addresses(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to, all of them public; NotPublic otherwise."""
    if not host:
        raise NotPublic("No host is named.")
    future = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        answers = future.result(timeout=RESOLVE_SECONDS)
    except concurrent.futures.TimeoutError:
        raise NotPublic(f"{host} did not resolve in time.") from None
    except (OSError, UnicodeError):
        raise NotPublic(f"{host} does not resolve.") from None
    addresses = [ipaddress.ip_address(str(answer[4][0]).split("%")[0]) for answer in answers]
    if not addresses or not all(is_public(address) for address in addresses):
        raise NotPublic(f"{host} is not a public address.")
    return addresses


# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, IPv4-compatible).
_EMBEDDING_IPV4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
        if address.is_site_local:
            return False
    return address.is_global and not address.is_multicast


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if any(address in network for network in _EMBEDDING_IPV4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
