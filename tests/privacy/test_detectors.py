"""The detectors: each kind finds what is private and leaves what only looks like it."""

from __future__ import annotations

import pytest
from pyln.proto import bech32 as pyln_bech32

from apps.privacy.detectors import Finding, Kind, detect
from apps.privacy.terms import Terms
from tests.lightningd import invoices

NO_TERMS = Terms()


def found(text: str, *, terms: Terms = NO_TERMS) -> list[tuple[Kind, str]]:
    return [(finding.kind, finding.value) for finding in detect(text, terms=terms)]


def values(text: str, kind: Kind, *, terms: Terms = NO_TERMS) -> list[str]:
    return [value for found_kind, value in found(text, terms=terms) if found_kind == kind]


def one_changed(value: str, index: int, alphabet: str) -> str:
    replacement = next(char for char in alphabet if char != value[index])
    return value[:index] + replacement + value[index + 1 :]


# --- e-mail ----------------------------------------------------------------------------------


def test_it_finds_email_addresses_in_a_sentence() -> None:
    text = "Write to anna.mueller+shop@mail.example.co.uk, or ask bob@example.org."
    assert values(text, Kind.EMAIL) == ["anna.mueller+shop@mail.example.co.uk", "bob@example.org"]


@pytest.mark.parametrize(
    "text", ["a @ mention", "user@localhost", "@handle on a site", "a..b@example.com", "x@-bad.com"]
)
def test_it_leaves_what_is_not_an_email_address(text: str) -> None:
    assert values(text, Kind.EMAIL) == []


# --- phone numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "+49 30 1234567",
        "+49 (0)30 123 456 78",
        "+44 20 7946 0958",
        "+1 (555) 123-4567",
        "+4915112345678",
        "030 1234567",
        "030/1234567",
        "0170-1234567",
        "(030) 123 4567",
        "020 7946 0958",
        "(555) 123-4567",
        "555-123-4567",
    ],
)
def test_it_finds_international_and_national_phone_numbers(number: str) -> None:
    assert values(f"Call me on {number} tomorrow.", Kind.PHONE) == [number]


def test_a_phone_number_next_to_a_date_is_found_without_the_date() -> None:
    text = "Ring 030 1234567 30.11.2026 or on 2026-11-30 030 7654321, not before 12:30."
    assert values(text, Kind.PHONE) == ["030 1234567", "030 7654321"]


def test_two_phone_numbers_in_a_row_are_two_findings() -> None:
    assert values("030 1234567 040 7654321", Kind.PHONE) == ["030 1234567", "040 7654321"]


@pytest.mark.parametrize(
    "text",
    [
        "due on 2026-11-30",
        "due on 30.11.2026",
        "due on 05.11.2026",
        "due on 11/05/2026 at 12:30:45",
        "it costs 1,234.56 or 12 000 €",
        "pay 0,50 € each",
        "version 0.21.3 and 1.2.3",
        "order 01701234567 shipped",  # no separators: a plain number, not a phone form
        "ISBN 978-3-16-148410-0",
        "block 870123 at height 123456789",
        "in 1999-2004",
    ],
)
def test_dates_amounts_versions_and_plain_numbers_are_not_phone_numbers(text: str) -> None:
    assert values(text, Kind.PHONE) == []


# --- IBANs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban", ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32"]
)
def test_it_finds_ibans_with_a_valid_checksum_spaced_or_not(iban: str) -> None:
    assert values(f"Send it to {iban} and tell me.", Kind.IBAN) == [iban]


def test_an_iban_with_a_wrong_checksum_is_not_an_iban() -> None:
    assert values("Send it to DE88 3704 0044 0532 0130 00 please", Kind.IBAN) == []
    assert values("Send it to DE89 3704 0044 0532 0130 01 please", Kind.IBAN) == []


def test_an_iban_is_found_before_the_words_that_follow_it() -> None:
    assert values("IBAN DE89 3704 0044 0532 0130 00 AB12 etc", Kind.IBAN) == [
        "DE89 3704 0044 0532 0130 00"
    ]


def test_an_iban_is_found_after_something_that_looked_like_one() -> None:
    assert values("ref XX12 DE89 3704 0044 0532 0130 00", Kind.IBAN) == [
        "DE89 3704 0044 0532 0130 00"
    ]


def with_check_digits(country: str, bban: str) -> str:
    """An IBAN whose mod-97 checksum holds, for any country code and length."""
    digits = "".join(str(int(char, 36)) for char in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def test_an_iban_needs_a_country_that_has_ibans_and_its_length() -> None:
    assert values(with_check_digits("NL", "ABNA0417164300"), Kind.IBAN) != []
    assert values(with_check_digits("NL", "ABNA04171643001"), Kind.IBAN) == []  # NL is 18
    assert values(with_check_digits("XY", "ABNA0417164300"), Kind.IBAN) == []  # no such country


# --- payment cards ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "card", ["4111 1111 1111 1111", "4111-1111-1111-1111", "5500005555555559", "3782 822463 10005"]
)
def test_it_finds_card_numbers_that_pass_luhn(card: str) -> None:
    assert values(f"card {card}, exp 12/27", Kind.CARD) == [card]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails Luhn
        "card 4111-1111 1111-1111",  # mixed separators
        "id 1234 5678 9012 3456",  # no issuer starts with 1... and Luhn fails too
        "total 4,111,111,111,111,111.00",
    ],
)
def test_numbers_that_fail_luhn_or_shape_are_not_cards(text: str) -> None:
    assert values(text, Kind.CARD) == []


# --- IP addresses ----------------------------------------------------------------------------


def test_it_finds_ipv4_and_ipv6_addresses() -> None:
    text = "Node at 192.168.1.20:9735, also 2001:db8::8a2e:370:7334 and fe80::1ff:fe23:4567:890a."
    assert values(text, Kind.IP) == [
        "192.168.1.20",
        "2001:db8::8a2e:370:7334",
        "fe80::1ff:fe23:4567:890a",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "256.1.1.1",
        "1.2.3.4.5",
        "at 12:30:45",
        "std::vector",
        "a :: b",
        "v1.2.3.4",
        "listen on 127.0.0.1 or 0.0.0.0",  # loopback and unspecified name no one's network
        "bind [::1]:8000 or 0:0:0:0:0:0:0:0",
    ],
)
def test_it_leaves_what_is_not_an_ip_address(text: str) -> None:
    assert values(text, Kind.IP) == []


# --- street addresses and postal codes -------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I live at Hauptstraße 5, 10115 Berlin.", ["Hauptstraße 5", "10115 Berlin"]),
        ("Berliner Straße 12a is closed", ["Berliner Straße 12a"]),
        ("Karl-Marx-Allee 90", ["Karl-Marx-Allee 90"]),
        ("We moved to 12 Main Street last year", ["12 Main Street"]),
        ("221B Baker St. London", ["221B Baker St."]),
        ("Springfield, IL 62704", ["IL 62704"]),
        ("London SW1A 1AA", ["SW1A 1AA"]),
        ("Anna Schmidt\nLindenweg 3\n80331 München\n", ["Lindenweg 3", "80331 München"]),
    ],
)
def test_it_finds_street_addresses_and_postal_codes_where_recognisable(
    text: str, expected: list[str]
) -> None:
    assert values(text, Kind.ADDRESS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Der Weg 5 Minuten lang",
        "We had 10115 Besucher today",
        "Preis, 12000 Euro, bitte",
        "Chapter 12 is long",
        "auf Platz 1 gelandet",
    ],
)
def test_numbers_beside_words_are_not_addresses(text: str) -> None:
    assert values(text, Kind.ADDRESS) == []


# --- Bitcoin ---------------------------------------------------------------------------------

P2PKH = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
P2SH = "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"
TESTNET_P2PKH = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"
P2WPKH = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
P2WSH_TESTNET = "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"
TAPROOT = "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"


def segwit(hrp: str, version: int, program: bytes) -> str:
    """BIP-173's reference encoder (as pyln-proto ships it): bech32 whatever the version."""
    five_bit = list(pyln_bech32.convertbits(program, 8, 5))
    return str(pyln_bech32.bech32_encode(hrp, bytes([version, *five_bit])))


REGTEST = segwit("bcrt", 0, bytes(range(20)))
XPUB = (
    "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TM"
    "g7usUDFdp6W1EGMcet8"
)
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


@pytest.mark.parametrize(
    "address",
    [P2PKH, P2SH, TESTNET_P2PKH, P2WPKH, P2WPKH.upper(), P2WSH_TESTNET, TAPROOT, REGTEST, XPUB],
)
def test_it_finds_bitcoin_addresses_with_valid_checksums(address: str) -> None:
    assert values(f"send to {address}.", Kind.BITCOIN) == [address]


@pytest.mark.parametrize("address", [P2PKH, P2SH, TESTNET_P2PKH])
def test_a_base58_address_with_one_character_changed_is_not_an_address(address: str) -> None:
    changed = one_changed(address, 10, BASE58)
    assert values(f"send to {changed}", Kind.BITCOIN) == []


@pytest.mark.parametrize("address", [P2WPKH, P2WSH_TESTNET, TAPROOT, REGTEST])
def test_a_bech32_address_with_one_character_changed_is_not_an_address(address: str) -> None:
    changed = one_changed(address, 12, BECH32)
    assert values(f"send to {changed}", Kind.BITCOIN) == []


def test_a_taproot_program_under_the_old_bech32_checksum_is_not_an_address() -> None:
    """BIP-350: witness version 1 must use bech32m."""
    wrong = segwit("bc", 1, bytes(range(32)))
    assert values(wrong, Kind.BITCOIN) == []


# --- Lightning invoices ----------------------------------------------------------------------


def invoice(*, currency: str = "bc", description: str = "coffee", amount: int | None = 1000) -> str:
    return invoices.encode(
        currency=currency,
        node_secret=bytes(range(1, 33)),
        payment_hash=bytes(32),
        payment_secret=bytes(range(32)),
        amount_msat=amount,
        description=description,
        created_at=1_700_000_000,
    )


@pytest.mark.parametrize(
    "bolt11",
    [
        invoice(),
        invoice(currency="tb", amount=None),
        invoice(currency="bcrt", amount=250_000_000),
        invoice(description="x" * 600),  # far beyond bech32's 90 characters
        invoice().upper(),
    ],
)
def test_it_finds_lightning_invoices_long_and_in_either_case(bolt11: str) -> None:
    assert values(f"pay {bolt11} now", Kind.LIGHTNING) == [bolt11]


def test_an_invoice_with_one_character_changed_is_not_an_invoice() -> None:
    bolt11 = invoice()
    assert values(one_changed(bolt11, 40, BECH32), Kind.LIGHTNING) == []


# --- Nostr -----------------------------------------------------------------------------------

NPUB = "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6"
NPROFILE = (
    "nprofile1qqsrhuxx8l9ex335q7he0f09aej04zpazpl0ne2cgukyawd24mayt8gpp4mhxue69uhhytnc9e3k7mgpz4mhxu"
    "e69uhkg6nzv9ejuumpv34kytnrdaksjlyr9p"
)


def test_it_finds_npubs_and_nprofiles() -> None:
    text = f"follow {NPUB} or {NPROFILE}"
    assert values(text, Kind.NOSTR) == [NPUB, NPROFILE]


def test_an_npub_with_one_character_changed_is_not_an_npub() -> None:
    assert values(one_changed(NPUB, 20, BECH32), Kind.NOSTR) == []


# --- API keys and tokens ---------------------------------------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.mark.parametrize(
    "token",
    [
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1w",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
        "sov_Jq3X9vA2bC7dE1fG4hI8kL0mN5pQ6rS",
        JWT,
        "AKIAIOSFODNN7EXAMPLE",
        "Zx8kP2qLm9Rt4Vb7Nc1Hd6Jf3Gs5Wy0A",  # bearer-like: random, mixed, 32 characters
    ],
)
def test_it_finds_api_keys_and_tokens(token: str) -> None:
    assert values(f"Authorization: Bearer {token}", Kind.API_KEY) == [token]


@pytest.mark.parametrize(
    "text",
    [
        # transaction ids and hashes are hex: public, everywhere, not tokens (see tokens.py)
        "txid 4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b",
        "ThisIsAVeryLongCamelCaseIdentifierName",
        "some_very_long_snake_case_function_name_here",
        "sk-short",
        "AKIAIOSFODNN7EXAMPL",
        "a" * 40,
    ],
)
def test_hashes_identifiers_and_short_strings_are_not_tokens(text: str) -> None:
    assert values(text, Kind.API_KEY) == []


# --- the household's terms -------------------------------------------------------------------

HOUSEHOLD = Terms(
    names=frozenset({"Anna Müller", "Anna", "Jörg"}),
    words=frozenset({"Hauptstraße", "Acme Widgets", "Süßwald"}),
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("anna müller called", "anna müller"),
        ("ANNA MUELLER called", "ANNA MUELLER"),
        ("Anna Muller called", "Anna Muller"),
        ("Anna Müller's car", "Anna Müller's"),
        ("Anna Müllers Auto", "Anna Müllers"),
        ("Anna\nMüller wrote", "Anna\nMüller"),
        ("ask Joerg today", "Joerg"),
        ("Jörg’s bike", "Jörg’s"),
    ],
)
def test_members_names_are_found_in_their_spellings_and_possessives(
    text: str, expected: str
) -> None:
    assert values(text, Kind.NAME, terms=HOUSEHOLD) == [expected]


def test_the_owners_words_are_found_across_umlaut_and_sharp_s_spellings() -> None:
    text = "From Hauptstrasse to Suesswald, working at acme widgets."
    assert values(text, Kind.TERM, terms=HOUSEHOLD) == ["Hauptstrasse", "Suesswald", "acme widgets"]
    assert values("Hauptstrasse 5", Kind.ADDRESS, terms=HOUSEHOLD) == ["Hauptstrasse 5"]


def test_terms_match_whole_words_only() -> None:
    assert found("Annabelle and Hannah at Acme Widgetsville", terms=HOUSEHOLD) == []


def test_a_digraph_term_does_not_match_the_bare_vowel() -> None:
    terms = Terms(words=frozenset({"Bauer"}))
    assert values("Bauer, Baür and Baur", Kind.TERM, terms=terms) == ["Bauer", "Baür"]


def test_terms_with_punctuation_are_taken_literally() -> None:
    terms = Terms(names=frozenset({"O'Brien"}), words=frozenset({"C++ Club", "St. Mary"}))
    text = "O'Brien's kids go to St. Mary and the C++ Club; Stx Mary is elsewhere."
    assert [value for _, value in found(text, terms=terms)] == ["O'Brien's", "St. Mary", "C++ Club"]


def test_one_letter_and_blank_terms_are_ignored() -> None:
    assert found("a b c", terms=Terms(words=frozenset({"a", " ", ""}))) == []


# --- overlaps, choice of kinds, bad input ----------------------------------------------------


def test_the_longer_finding_wins_where_two_overlap() -> None:
    text = "mail anna.mueller@example.com today"
    terms = Terms(words=frozenset({"Mueller"}))
    assert found(text, terms=terms) == [(Kind.EMAIL, "anna.mueller@example.com")]


def test_findings_are_sorted_and_never_overlap() -> None:
    text = f"Anna Müller, Hauptstraße 5, +49 30 1234567, {P2WPKH}, anna@example.com"
    findings = detect(text, terms=HOUSEHOLD)
    assert [f.start for f in findings] == sorted(f.start for f in findings)
    assert all(a.end <= b.start for a, b in zip(findings, findings[1:], strict=False))
    assert all(text[f.start : f.end] == f.value for f in findings)
    assert [f.kind for f in findings] == [
        Kind.NAME,
        Kind.ADDRESS,
        Kind.PHONE,
        Kind.BITCOIN,
        Kind.EMAIL,
    ]


def test_only_the_enabled_kinds_are_looked_for() -> None:
    text = "Anna: +49 30 1234567, bob@example.com"
    enabled = frozenset({Kind.PHONE, Kind.NAME})
    assert [f.kind for f in detect(text, terms=HOUSEHOLD, enabled=enabled)] == [
        Kind.NAME,
        Kind.PHONE,
    ]


def test_a_finding_never_shows_its_value_in_its_repr() -> None:
    finding = Finding(Kind.EMAIL, 0, 16, "anna@example.com")
    assert "anna" not in repr(finding)


def test_binary_garbage_passes_without_an_exception() -> None:
    garbage = bytes(range(256)).decode("latin-1") * 50 + "\udcff\x00\ufffd" * 100
    detect(garbage, terms=HOUSEHOLD)


def test_digits_of_other_scripts_pass_without_an_exception() -> None:
    detect("card ٤١١١ ١١١١ ١١١١ ١١١١, phone ٠٣٠ ١٢٣٤٥٦٧, ip ١.٢.٣.٤", terms=HOUSEHOLD)


@pytest.mark.parametrize(
    "chunk",
    [
        "a." * 10,  # e-mail local parts with no @
        "1 " * 10,  # phone separators with no end
        "DE12 " * 10,  # IBAN groups that never check out
        "Ab1" * 10 + "-",  # token characters
        "abandon ",  # BIP-39 words, for the hard stops' sake
        "::a",  # IPv6-looking
        "lnbc1" + "q" * 20,  # invoice-looking
        "Müller" * 5,
    ],
)
def test_a_pathological_megabyte_is_scanned_to_the_end(chunk: str) -> None:
    text = chunk * (1_048_576 // len(chunk)) + " anna@example.com"
    findings = detect(text, terms=HOUSEHOLD)
    assert findings[-1].value == "anna@example.com"
