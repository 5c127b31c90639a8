"""Public addresses only, whatever the spelling of a private one."""

from __future__ import annotations

import pytest

from apps.identity.addresses import NotPublic, public_addresses


def test_a_public_address_is_kept_as_resolved() -> None:
    assert [str(a) for a in public_addresses("1.1.1.1", 443)] == ["1.1.1.1"]


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "0x7f000001",
        "2130706433",
        "10.1.2.3",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "::ffff:192.168.0.1",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "::127.0.0.1",  # IPv4-compatible
        "fec0::1",  # site-local
        "localhost.",
    ],
)
def test_every_spelling_of_a_private_address_is_refused(host: str) -> None:
    # localhost. resolves to loopback on some machines and to nothing on others.
    with pytest.raises(NotPublic, match="not a public address|does not resolve"):
        public_addresses(host, 443)


def test_an_ipv6_address_carrying_a_public_ipv4_one_is_public() -> None:
    assert [str(a) for a in public_addresses("64:ff9b::101:101", 443)] == ["64:ff9b::101:101"]
