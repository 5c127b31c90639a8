"""A conversation's vault (apps/privacy/vault.py): each private value becomes a placeholder,
the same one in every turn, and no vault ever sees another's values."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest

from apps.privacy import vault as vault_module
from apps.privacy.restore import restore
from apps.privacy.vault import Finding, Vault, VaultFull, VaultStateInvalid, kind_label


@dataclass(frozen=True)
class Found:
    kind: str
    start: int
    end: int
    value: str


class FoundTuple(NamedTuple):
    kind: str
    start: int
    end: int
    value: str


def found(text: str, kind: str, value: str) -> Found:
    start = text.index(value)
    return Found(kind, start, start + len(value), value)


def findings(text: str, **values: str) -> list[Found]:
    return [found(text, kind.rstrip("_0123456789"), value) for kind, value in values.items()]


def test_each_value_becomes_a_placeholder_numbered_per_kind() -> None:
    text = "Write to ana@example.org or bo@example.org, or call +41 44 123 45 67."
    spotted = findings(
        text, email_1="ana@example.org", email_2="bo@example.org", phone="+41 44 123 45 67"
    )

    redacted = Vault().redact(text, spotted)

    assert redacted == "Write to [EMAIL_1] or [EMAIL_2], or call [PHONE_1]."


def test_the_same_value_gets_the_same_placeholder_wherever_it_appears() -> None:
    vault = Vault()
    text = "ana@example.org, again ana@example.org"
    twice = [Found("email", 0, 15, "ana@example.org"), Found("email", 23, 38, "ana@example.org")]

    assert vault.redact(text, twice) == "[EMAIL_1], again [EMAIL_1]"
    assert len(vault) == 1


def test_a_conversation_keeps_its_placeholders_across_turns_through_its_state() -> None:
    first = Vault()
    first.redact("Mail ana@example.org", [Found("email", 5, 20, "ana@example.org")])
    kept = json.loads(json.dumps(first.state()))  # as a conversation would store it

    second = Vault.from_state(kept)
    text = "Now bo@example.org and ana@example.org"
    redacted = second.redact(
        text, findings(text, email="bo@example.org", email_2="ana@example.org")
    )

    assert redacted == "Now [EMAIL_2] and [EMAIL_1]"
    assert restore(second, "[EMAIL_1], [EMAIL_2]").text == "ana@example.org, bo@example.org"


def test_a_value_found_as_another_kind_keeps_its_first_placeholder() -> None:
    vault = Vault()
    vault.redact("4111", [Found("card", 0, 4, "4111")])

    assert vault.redact("pin 4111", [Found("phone", 4, 8, "4111")]) == "pin [CARD_1]"


def test_a_printed_vault_names_kinds_and_counts_never_values() -> None:
    vault = Vault()
    text = "ana@example.org 079 555 12 12"
    vault.redact(text, findings(text, email="ana@example.org", phone="079 555 12 12"))

    shown = repr(vault) + str(vault) + f"{vault!r}"

    assert "ana@example.org" not in shown and "555" not in shown
    assert "EMAIL: 1" in repr(vault)


def test_findings_that_overlap_partly_are_redacted_as_one_so_nothing_of_either_leaves() -> None:
    text = "pay CH93 0076 2011 6238 5295 7 today"
    spotted = [Found("iban", 4, 20, "CH93 0076 2011 6"), Found("phone", 14, 30, "2011 6238 5295 7")]
    vault = Vault()

    assert vault.redact(text, spotted) == "pay [IBAN_1] today"
    assert vault.value_of("IBAN_1") == "CH93 0076 2011 6238 5295 7"


def test_findings_that_only_touch_stay_two_placeholders() -> None:
    spotted = [Found("name", 0, 3, "Ana"), Found("name", 3, 9, "Müller")]

    assert Vault().redact("AnaMüller", spotted) == "[NAME_1][NAME_2]"


def test_overlapping_findings_redact_the_earliest_and_longest_once() -> None:
    text = "Call Ana Müller-Meier at home"
    spotted = [
        Found("household", 9, 15, "Müller"),
        Found("name", 5, 21, "Ana Müller-Meier"),
        Found("household", 5, 8, "Ana"),
    ]

    assert Vault().redact(text, spotted) == "Call [NAME_1] at home"


def test_a_span_outside_the_text_is_clamped_and_an_empty_one_skipped() -> None:
    text = "secret"
    spotted = [Found("token", -3, 99, "secret"), Found("token", 4, 4, "")]

    assert Vault().redact(text, spotted) == "[TOKEN_1]"


def test_the_span_decides_what_is_redacted_not_the_value_a_detector_named() -> None:
    vault = Vault()
    redacted = vault.redact("key sk-abc123", [Found("api_key", 4, 13, "something else")])

    assert redacted == "key [API_KEY_1]"
    assert vault.value_of("API_KEY_1") == "sk-abc123"


def test_a_named_tuple_is_a_finding_too() -> None:
    spotted: list[Finding] = [FoundTuple("iban", 0, 4, "CH93")]

    assert Vault().redact("CH93 …", spotted) == "[IBAN_1] …"


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        ("email", "EMAIL"),
        ("bitcoin-address", "BITCOIN_ADDRESS"),
        ("  api key ", "API_KEY"),
        ("ipv4", "IPV4"),
        ("", "PRIVATE"),
        ("4chan", "PRIVATE"),
        ("名前", "PRIVATE"),
        ("x" * 100, "X" * 32),
    ],
)
def test_a_kind_is_spelled_as_a_placeholder_can_carry_it(kind: str, label: str) -> None:
    assert kind_label(kind) == label


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 2, "values": {}, "counters": {}},
        {"version": 1, "values": [], "counters": {}},
        {"version": 1, "values": {"email_1": "a"}, "counters": {}},
        {"version": 1, "values": {"EMAIL_1": 7}, "counters": {}},
        {"version": 1, "values": {"EMAIL_1": "a", "EMAIL_2": "a"}, "counters": {}},
        {"version": 1, "values": {}, "counters": {"EMAIL": "1"}},
        {"version": 1, "values": {}, "counters": {"email": 1}},
        {"version": 1, "values": {}, "counters": {"EMAIL": 10**9}},
        ["not", "a", "mapping"],
    ],
)
def test_a_state_it_did_not_write_is_refused(state: Any) -> None:
    with pytest.raises(VaultStateInvalid):
        Vault.from_state(state)


def test_a_number_once_given_is_never_given_to_another_value() -> None:
    vault = Vault.from_state(
        {"version": 1, "values": {"EMAIL_1": "a@x.org"}, "counters": {"EMAIL": 3}}
    )

    assert vault.placeholder("email", "b@x.org") == "[EMAIL_4]"


def test_a_conversation_with_too_many_values_refuses_rather_than_leaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vault_module, "MAX_VALUES", 2)
    vault = Vault()
    vault.placeholder("email", "a@x.org")
    vault.placeholder("email", "b@x.org")

    assert vault.placeholder("email", "a@x.org") == "[EMAIL_1]"  # a known value still fits
    with pytest.raises(VaultFull):
        vault.placeholder("email", "c@x.org")


def test_concurrent_conversations_in_threads_never_see_each_others_values() -> None:
    conversations = 8
    start = threading.Barrier(conversations)
    seen: dict[int, list[str]] = {}

    def converse(number: int) -> None:
        vault = Vault()
        start.wait()
        answers = []
        for turn in range(200):
            value = f"person{number}-turn{turn}@example.org"
            redacted = vault.redact(value, [Found("email", 0, len(value), value)])
            answers.append(restore(vault, f"Hello {redacted}").text)
        seen[number] = answers

    threads = [threading.Thread(target=converse, args=(n,)) for n in range(conversations)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for number, answers in seen.items():
        expected = [f"Hello person{number}-turn{turn}@example.org" for turn in range(200)]
        assert answers == expected
