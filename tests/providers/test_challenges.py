"""Reading 402 challenges as servers send them (lightning.md §1.3, §1.6)."""

from __future__ import annotations

import base64
import secrets

import pytest

from apps.providers.challenges import (
    Challenge,
    challenges_parsed,
    l402_challenge,
    macaroon_payment_hash,
)
from tests.providers.doubles import macaroons

PAYMENT_HASH = secrets.token_hex(32)
RAW = macaroons.mint(
    secrets.token_bytes(32),
    macaroons.l402_identifier(PAYMENT_HASH, secrets.token_bytes(32)),
    "l402",
    (b"services=chat:0",),
)
STANDARD = base64.b64encode(RAW).decode()
URLSAFE = base64.urlsafe_b64encode(RAW).decode().rstrip("=")
INVOICE = "lnbcrt200n1pexample"


def test_it_reads_aperture_s_two_lines_and_answers_with_l402() -> None:
    lines = [
        f'LSAT macaroon="{STANDARD}", invoice="{INVOICE}"',
        f'L402 macaroon="{STANDARD}", invoice="{INVOICE}"',
    ]

    chosen = l402_challenge(challenges_parsed(lines))

    assert chosen is not None
    assert (chosen.scheme, chosen.token, chosen.invoice) == ("L402", STANDARD, INVOICE)


def test_it_answers_with_lsat_only_when_only_lsat_was_offered() -> None:
    chosen = l402_challenge(challenges_parsed([f'LSAT macaroon="{STANDARD}", invoice="{INVOICE}"']))

    assert chosen is not None and chosen.scheme == "LSAT"


def test_it_reads_a_folded_line_of_unquoted_token_params_in_any_case() -> None:
    folded = (
        f'lsat token={URLSAFE}, invoice={INVOICE}, Bearer realm="a, b", '
        f'l402 version=0, token={STANDARD}, invoice={INVOICE}, extra="ignored"'
    )

    parsed = challenges_parsed([folded])
    chosen = l402_challenge(parsed)

    assert [c.scheme for c in parsed] == ["lsat", "bearer", "l402"]
    assert parsed[1] == Challenge("bearer", {"realm": "a, b"})
    assert chosen is not None and (chosen.scheme, chosen.token) == ("L402", STANDARD)


def test_a_challenge_without_an_invoice_is_not_an_l402_challenge() -> None:
    assert l402_challenge(challenges_parsed([f'L402 macaroon="{STANDARD}"'])) is None
    assert l402_challenge(challenges_parsed(['Payment id="x", method="lightning"'])) is None


@pytest.mark.parametrize("token", [STANDARD, URLSAFE, STANDARD.rstrip("=")])
def test_it_reads_the_payment_hash_from_the_macaroon_in_any_base64(token: str) -> None:
    assert macaroon_payment_hash(token) == PAYMENT_HASH


NOT_L402 = [
    "",
    "not base64!",
    base64.b64encode(b"\x02\x02\x05short").decode(),  # an identifier field cut short
    base64.b64encode(b"\x02\x02\x03abc\x00").decode(),  # an identifier that is not L402's
]


@pytest.mark.parametrize("token", NOT_L402)
def test_a_token_that_is_no_l402_macaroon_carries_no_hash(token: str) -> None:
    assert macaroon_payment_hash(token) is None


def test_garbage_headers_give_no_challenge_and_no_error() -> None:
    assert challenges_parsed(["", ",,,", '=" broken', "L402 =x, =y"]) == []
