"""Hard stops: the keys to the household's money and identity never leave, not even redacted."""

from __future__ import annotations

import base58
import pytest

from apps.privacy.hard_stops import Stop, StopKind, bip39_words, hard_stops

# BIP-39's test vectors: the all-zero entropy phrases, checksum valid.
SEED_12 = " ".join(["abandon"] * 11 + ["about"])
SEED_24 = " ".join(["abandon"] * 23 + ["art"])
NSEC = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"  # NIP-19's example
NPUB = "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6"
# BIP-32 test vector 1, the master key pair.
XPRV = (
    "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TG"
    "tRBeJgk33yuGBxrMPHi"
)
XPUB = (
    "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TM"
    "g7usUDFdp6W1EGMcet8"
)
TPRV = base58.b58encode_check(bytes.fromhex("04358394") + base58.b58decode_check(XPRV)[4:]).decode()
# The same private key in wallet import format, uncompressed and compressed.
WIF = "5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTJ"
WIF_COMPRESSED = "KwdMAjGmerYanjeui5SHS7JkmpZvVipYvB2LJGU1ZxJwYvP98617"
PREIMAGE = "5f1a3c" + "0" * 52 + "abcdef"
ORDINARY_PARAGRAPH = (
    "Last winter my brother and I drove to the lake house after a long day at work. The road "
    "was icy, so we kept a slow speed and talked about the family, the garden, our jobs, a new "
    "recipe for apple cake and the old piano that still sits in the corner of the living room. "
    "When we arrived, the door was open and the kitchen light was on: our uncle had left a note "
    "on the table asking us to feed the cat and water the plants before the end of the week."
)


def kinds(text: str, *, secrets: frozenset[str] = frozenset()) -> list[StopKind]:
    return [stop.kind for stop in hard_stops(text, secrets=secrets)]


def one_changed(value: str, index: int, alphabet: str) -> str:
    replacement = next(char for char in alphabet if char != value[index])
    return value[:index] + replacement + value[index + 1 :]


def test_the_wordlist_is_bip39_english() -> None:
    words = bip39_words()
    assert len(words) == 2048
    assert {"abandon", "zoo", "about", "wrist"} <= words


# --- seed phrases ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        SEED_12,
        SEED_24,
        SEED_12.upper(),
        SEED_12.replace(" ", ", "),
        SEED_12.replace(" ", "\n"),
        " ".join(f"{n}. {word}" for n, word in enumerate(SEED_12.split(), start=1)),
        "\n".join(f"{n}) {word}" for n, word in enumerate(SEED_24.split(), start=1)),
        " ".join(["abandon"] * 15),  # 15 words, checksum wrong: still the wallet
    ],
)
def test_a_seed_phrase_stops_the_request_however_it_is_written(written: str) -> None:
    text = f"my wallet words are: {written} - keep them safe"
    stops = hard_stops(text)
    assert [stop.kind for stop in stops] == [StopKind.SEED_PHRASE]
    covered = text[stops[0].start : stops[0].end].lower()
    assert covered.startswith("abandon") and covered.endswith(written.lower().split()[-1])


def test_a_checksum_valid_phrase_is_marked_verified_and_a_wrong_one_is_not() -> None:
    assert [stop.verified for stop in hard_stops(SEED_12)] == [True]
    assert [stop.verified for stop in hard_stops(" ".join(["abandon"] * 12))] == [False]


def test_the_stop_covers_the_whole_phrase() -> None:
    text = f"words: {SEED_24}."
    (stop,) = hard_stops(text)
    assert text[stop.start : stop.end] == SEED_24


def test_eleven_words_are_not_a_seed_phrase() -> None:
    assert kinds(" ".join(["abandon"] * 10 + ["about"])) == []


def test_a_word_outside_the_list_breaks_the_run() -> None:
    words = SEED_12.split()
    assert kinds(" ".join(words[:6] + ["the"] + words[6:])) == []


def test_an_ordinary_paragraph_is_not_a_seed_phrase() -> None:
    """About a quarter of English words are in the BIP-39 list, but never twelve in a row in
    ordinary prose: over 218,000 words of licences and documentation the longest run was 7."""
    listed = [w for w in ORDINARY_PARAGRAPH.lower().replace(",", " ").split() if w in bip39_words()]
    assert len(listed) >= 30  # the paragraph is full of wordlist words...
    assert kinds(ORDINARY_PARAGRAPH) == []  # ...but they are not in a row


# --- Nostr and wallet keys -------------------------------------------------------------------


def test_an_nsec_stops_the_request_and_an_npub_does_not() -> None:
    assert kinds(f"my key {NSEC} and my npub {NPUB}") == [StopKind.NSEC]
    assert kinds(NSEC.upper()) == [StopKind.NSEC]


def test_an_nsec_with_one_character_changed_still_stops_unverified() -> None:
    """One mistyped character is found again by trying each position: the shape stops it."""
    (stop,) = hard_stops(one_changed(NSEC, 20, "qpzry9x8gf2tvdw0s3jn54khce6mua7l"))
    assert (stop.kind, stop.verified) == (StopKind.NSEC, False)
    assert [stop.verified for stop in hard_stops(NSEC)] == [True]


@pytest.mark.parametrize("key", [XPRV, TPRV])
def test_an_extended_private_key_stops_the_request(key: str) -> None:
    stops = hard_stops(f"backup: {key}")
    assert [(stop.kind, stop.verified) for stop in stops] == [(StopKind.EXTENDED_PRIVATE_KEY, True)]


def test_an_extended_public_key_is_not_a_hard_stop() -> None:
    assert kinds(XPUB) == []


def test_an_extended_private_key_with_one_character_changed_stops_unverified() -> None:
    changed = one_changed(XPRV, 50, "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
    assert [(s.kind, s.verified) for s in hard_stops(changed)] == [
        (StopKind.EXTENDED_PRIVATE_KEY, False)
    ]


@pytest.mark.parametrize("key", [WIF, WIF_COMPRESSED])
def test_a_private_key_in_wallet_import_format_stops_the_request(key: str) -> None:
    assert kinds(f"import {key} into the wallet") == [StopKind.PRIVATE_KEY]


def test_a_base58_string_of_wif_shape_without_its_checksum_is_not_stopped() -> None:
    assert kinds(one_changed(WIF, 20, "123456789ABCDEFGH")) == []


# --- preimages of live tokens ----------------------------------------------------------------


def test_the_preimage_of_a_live_token_stops_the_request_in_either_case() -> None:
    live = frozenset({PREIMAGE})
    assert kinds(f"the proof is {PREIMAGE}", secrets=live) == [StopKind.PREIMAGE]
    assert kinds(f"the proof is {PREIMAGE.upper()}", secrets=live) == [StopKind.PREIMAGE]
    assert kinds(f"inside a longer string x{PREIMAGE}y", secrets=live) == [StopKind.PREIMAGE]


def test_a_hex_string_that_is_not_a_live_preimage_passes() -> None:
    assert kinds(f"the proof is {PREIMAGE}") == []
    assert kinds("txid " + "ab" * 32, secrets=frozenset({PREIMAGE})) == []


# --- messages and bad input ------------------------------------------------------------------


def test_each_stop_names_what_was_found_in_its_own_words() -> None:
    messages = {Stop(kind, 0, 1, verified=True).message for kind in StopKind}
    assert len(messages) == len(StopKind)
    assert all(message.startswith("Not sent: the message contains ") for message in messages)


def test_a_message_never_contains_the_value() -> None:
    text = f"{SEED_12} {NSEC} {XPRV} {WIF} {PREIMAGE}"
    stops = hard_stops(text, secrets=frozenset({PREIMAGE}))
    assert len(stops) == 5
    for stop in stops:
        assert text[stop.start : stop.end] not in stop.message
        assert "abandon" not in stop.message


def test_stops_come_in_the_order_they_appear() -> None:
    text = f"{XPRV} then {SEED_12} then {NSEC}"
    assert kinds(text) == [
        StopKind.EXTENDED_PRIVATE_KEY,
        StopKind.SEED_PHRASE,
        StopKind.NSEC,
    ]


def test_binary_garbage_passes_without_an_exception() -> None:
    garbage = bytes(range(256)).decode("latin-1") * 50 + "\udcff\x00\ufffd" * 100
    assert hard_stops(garbage, secrets=frozenset({PREIMAGE})) == []


def test_a_megabyte_of_wordlist_words_is_scanned_to_the_end() -> None:
    text = "abandon " * 131_072 + "qqq " + SEED_12
    stops = hard_stops(text)
    assert [stop.kind for stop in stops] == [StopKind.SEED_PHRASE] * 2
    assert text[stops[-1].start : stops[-1].end] == SEED_12
