"""Putting the values back (apps/privacy/restore.py): whole answers, streams cut anywhere,
JSON answers and tool-call arguments, placeholders a model changed, and bad input."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from apps.inference.backends.base import (
    PRIMING,
    AnswerEvent,
    Done,
    Events,
    Failed,
    RefusalCode,
    Token,
    Usage,
    primed,
)
from apps.privacy.restore import (
    MAX_PLACEHOLDER_LENGTH,
    StreamRestorer,
    restore,
    restore_arguments,
    restore_json,
    restored_events,
)
from apps.privacy.vault import Vault

EMAIL = "ana@example.org"
PHONE = "+41 44 123 45 67"
IBAN = "CH93 0076 2011 6238 5295 7"
ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
LONG_KIND = "abcd_efgh_ijkl_mnop_qrst_uvwx_yz"  # as long as a kind may be
# The longest placeholder still restored: every space and separator a model may add.
LONGEST = "[  " + LONG_KIND.replace("_", "__") + "  -000001  ]"


def household_vault() -> Vault:
    vault = Vault()
    for kind, value in [("email", EMAIL), ("phone", PHONE), ("iban", IBAN)]:
        vault.placeholder(kind, value)
    vault.placeholder("bitcoin address", ADDRESS)
    vault.placeholder(LONG_KIND, "the long one")
    return vault


def streamed(vault: Vault, pieces: list[str]) -> tuple[str, list[str]]:
    restorer = StreamRestorer(vault)
    out = [restorer.feed(piece) for piece in pieces]
    out.append(restorer.end())
    return "".join(out), restorer.unknown


def test_an_answer_gets_its_values_back() -> None:
    answer = "I wrote to [EMAIL_1] and will pay [IBAN_1] from [BITCOIN_ADDRESS_1]."

    restored = restore(household_vault(), answer)

    assert restored.text == f"I wrote to {EMAIL} and will pay {IBAN} from {ADDRESS}."
    assert restored.unknown == []


@pytest.mark.parametrize(
    "changed",
    [
        "[Email_1]",
        "[email_1]",
        "[EMAIL 1]",
        "[email-1]",
        "[ EMAIL_1 ]",
        "[EMAIL_01]",
        "[EMAIL - 1]",
    ],
)
def test_a_placeholder_a_model_changed_slightly_is_still_restored(changed: str) -> None:
    assert restore(household_vault(), f"Mail {changed}.").text == f"Mail {EMAIL}."


def test_a_kind_of_several_words_is_restored_however_it_is_separated() -> None:
    vault = household_vault()

    assert restore(vault, "[Bitcoin Address 1]").text == ADDRESS
    assert restore(vault, "[bitcoin-address-1]").text == ADDRESS


@pytest.mark.parametrize(
    "left",
    [
        "EMAIL_1",  # no brackets: maybe the model's own name for something
        "(EMAIL_1)",
        "{EMAIL_1}",
        "[MAIL_1]",
        "[EMAIL_11]",
        "[EMAIL1]",
        "[E MAIL_1]",
        "[EMAIL_1",
        "[   EMAIL_1]",
    ],
)
def test_what_is_not_a_placeholder_of_the_vault_stays_as_it_is(left: str) -> None:
    assert restore(household_vault(), f"see {left} here").text == f"see {left} here"


def test_a_placeholder_the_vault_does_not_know_is_left_visible_and_noted() -> None:
    answer = "[EMAIL_2] or [IBAN_7] or [email 9], see [Step 1] and [Note_2]; [EMAIL_2] again"

    restored = restore(household_vault(), answer)

    assert restored.text == answer
    assert restored.unknown == ["[EMAIL_2]", "[IBAN_7]", "[email 9]"]


def test_a_vault_only_restores_its_own_values() -> None:
    ours, theirs = Vault(), Vault()
    ours.placeholder("email", EMAIL)
    theirs.placeholder("email", "bo@example.org")

    assert restore(ours, "[EMAIL_1]").text == EMAIL
    assert restore(theirs, "[EMAIL_1]").text == "bo@example.org"
    assert restore(Vault(), "[EMAIL_1]").unknown == ["[EMAIL_1]"]


ANSWER = (
    "Dear [Email_1], your IBAN [IBAN_1] and phone [ PHONE_1 ] are noted; [EMAIL_3] is not "
    "ours, [a] link [x](y) and [1, 2] and [[EMAIL_1]] stay, [bitcoin address 1] is paid, "
    f"last [EMAIL 1] {LONGEST}"
)


def test_the_longest_placeholder_a_model_may_write_is_restored() -> None:
    assert len(LONGEST) == MAX_PLACEHOLDER_LENGTH
    assert restore(household_vault(), LONGEST).text == "the long one"
    assert restore(household_vault(), LONGEST.replace("[ ", "[  ")).text != "the long one"


def test_a_stream_cut_at_every_position_restores_like_the_whole_answer() -> None:
    vault = household_vault()
    whole = restore(vault, ANSWER)

    for cut in range(len(ANSWER) + 1):
        text, unknown = streamed(vault, [ANSWER[:cut], ANSWER[cut:]])
        assert (cut, text) == (cut, whole.text)
        assert unknown == whole.unknown


def test_a_stream_cut_at_every_pair_of_positions_restores_like_the_whole_answer() -> None:
    vault = household_vault()
    answer = "[Email_1]x[IBAN 1][EMAIL_9] [bitcoin-address-1]"
    whole = restore(vault, answer).text

    for first in range(len(answer) + 1):
        for second in range(first, len(answer) + 1):
            pieces = [answer[:first], answer[first:second], answer[second:]]
            assert streamed(vault, pieces)[0] == whole, pieces


def test_a_stream_of_one_character_at_a_time_restores_like_the_whole_answer() -> None:
    vault = household_vault()

    assert streamed(vault, list(ANSWER))[0] == restore(vault, ANSWER).text


def test_random_answers_cut_at_random_restore_like_the_whole_answer() -> None:
    generator = random.Random(1515)  # noqa: S311 (odd text, not a secret)
    pieces = ["[", "]", " ", "_", "-", "0", "1", "EMAIL", "email", "IBAN", "x", "[EMAIL_1]"]
    vault = household_vault()

    for _ in range(300):
        answer = "".join(generator.choice(pieces) for _ in range(60))
        cuts = sorted(generator.sample(range(len(answer) + 1), 6))
        bounds = zip([0, *cuts], [*cuts, len(answer)], strict=True)
        chunks = [answer[start:end] for start, end in bounds]
        whole = restore(vault, answer)
        assert streamed(vault, chunks) == (whole.text, whole.unknown), chunks


def test_a_stream_holds_back_only_what_could_still_become_a_placeholder() -> None:
    restorer = StreamRestorer(household_vault())

    assert restorer.feed("Hello, write to [EM") == "Hello, write to "
    assert restorer.feed("AIL_") == ""
    assert restorer.feed("1] now") == f"{EMAIL} now"


@pytest.mark.parametrize("chunk", ["a [1", "a [(", "x[]", "[EMAIL_1 x]", "see [  -", "["])
def test_a_bracket_that_cannot_start_a_placeholder_is_released_at_once(chunk: str) -> None:
    restorer = StreamRestorer(household_vault())

    if chunk == "[":
        assert restorer.feed(chunk) == ""
        assert restorer.feed("(") == "[("
    else:
        assert restorer.feed(chunk) == chunk


def test_a_long_bracketed_run_is_released_once_no_placeholder_could_be_that_long() -> None:
    restorer = StreamRestorer(household_vault())

    out = restorer.feed("[" + "A" * (MAX_PLACEHOLDER_LENGTH - 2))
    assert out == ""
    assert restorer.feed("A") == "[" + "A" * (MAX_PLACEHOLDER_LENGTH - 1)


def test_a_huge_odd_stream_is_never_held_back_beyond_one_placeholder() -> None:
    generator = random.Random(15)  # noqa: S311 (odd text, not a secret)
    alphabet = "[[]] _-aZ09\x00\ud800é\n"
    text = "".join(generator.choice(alphabet) for _ in range(200_000)) + "[EMAIL_1]"
    vault = household_vault()
    restorer = StreamRestorer(vault)
    released, fed = 0, 0
    pieces = []

    for start in range(0, len(text), 997):
        piece = restorer.feed(text[start : start + 997])
        pieces.append(piece)
        released += len(piece)
        fed = min(start + 997, len(text))
        assert fed - released < MAX_PLACEHOLDER_LENGTH
    pieces.append(restorer.end())

    assert "".join(pieces) == restore(vault, text).text
    assert "".join(pieces).endswith(EMAIL)


def test_a_huge_answer_with_many_brackets_is_restored_whole() -> None:
    answer = "[" * 1_000_000 + "[EMAIL_1]" + "[EMAIL " * 100_000

    restored = restore(household_vault(), answer)

    assert restored.text == "[" * 1_000_000 + EMAIL + "[EMAIL " * 100_000


def test_a_json_answer_is_restored_in_every_string_keys_included() -> None:
    answer = {"[EMAIL_1]": ["call [PHONE_1]", 3, None, {"iban": "[iban 1]"}], "n": 1.5}

    restored = restore_json(household_vault(), answer)

    assert restored.value == {EMAIL: [f"call {PHONE}", 3, None, {"iban": IBAN}], "n": 1.5}
    assert restored.unknown == []


def test_tool_call_arguments_stay_valid_json_when_a_value_has_quotes() -> None:
    vault = Vault()
    vault.placeholder("name", 'Ana "the boss" \\ Müller')
    arguments = json.dumps({"to": "[NAME_1]", "cc": "[EMAIL_4]"})

    restored = restore_arguments(vault, arguments)

    assert json.loads(restored.text) == {"to": 'Ana "the boss" \\ Müller', "cc": "[EMAIL_4]"}
    assert restored.unknown == ["[EMAIL_4]"]


def test_tool_call_arguments_that_do_not_parse_are_restored_as_text() -> None:
    restored = restore_arguments(household_vault(), '{"to": "[EMAIL_1]", ')

    assert restored.text == f'{{"to": "{EMAIL}", '


def test_tool_call_arguments_without_a_placeholder_come_back_exactly() -> None:
    arguments = '{ "a" :  [1,2] }'

    assert restore_arguments(household_vault(), arguments).text == arguments
    assert restore_arguments(household_vault(), '{"a": "[x]"}').text == '{"a": "[x]"}'


def test_deeply_nested_arguments_do_not_crash() -> None:
    arguments = "[" * 100_000 + '"[EMAIL_1]"' + "]" * 100_000

    restored = restore_arguments(household_vault(), arguments)

    assert EMAIL in restored.text


def test_streamed_json_text_gets_its_values_escaped() -> None:
    vault = Vault()
    vault.placeholder("name", 'Ana "A" Müller')
    restorer = StreamRestorer(vault, json_string=True)

    text = restorer.feed('{"to": "[NA') + restorer.feed('ME_1]"}') + restorer.end()

    assert json.loads(text) == {"to": 'Ana "A" Müller'}


DONE = Done("stop", Usage(3, 4))


async def answer_of(events: list[AnswerEvent], closed: list[bool] | None = None) -> Events:
    """An answer as a backend hands it out: already started, so closing it runs its end."""
    return await primed(_answer(events, closed))


async def _answer(events: list[AnswerEvent], closed: list[bool] | None) -> Events:
    try:
        yield PRIMING
        for event in events:
            await asyncio.sleep(0)
            yield event
    finally:
        if closed is not None:
            closed.append(True)


async def collected(events: Events) -> list[AnswerEvent]:
    return [event async for event in events]


def test_restored_events_put_values_back_and_flush_before_the_end() -> None:
    answer: list[AnswerEvent] = [Token("Hi [EMA"), Token("IL_1] and [PHO"), Token("NE_1"), DONE]

    async def run() -> list[AnswerEvent]:
        return await collected(await restored_events(await answer_of(answer), household_vault()))

    events = asyncio.run(run())

    assert events == [Token("Hi "), Token(f"{EMAIL} and "), Token("[PHONE_1"), DONE]


def test_restored_events_flush_what_was_held_before_a_failure() -> None:
    failed = Failed(RefusalCode.PROVIDER_FAILED, "Cut.")
    answer: list[AnswerEvent] = [Token("Call [PHONE_1"), Token("] or [EMA"), failed]

    async def run() -> list[AnswerEvent]:
        return await collected(await restored_events(await answer_of(answer), household_vault()))

    events = asyncio.run(run())

    assert events == [Token("Call "), Token(f"{PHONE} or "), Token("[EMA"), failed]


def test_restored_events_note_unknown_placeholders_at_the_end() -> None:
    answer: list[AnswerEvent] = [Token("[EMAIL_5] and [EMAIL_1]"), DONE]

    async def run() -> list[AnswerEvent]:
        return await collected(await restored_events(await answer_of(answer), household_vault()))

    events = asyncio.run(run())

    assert events[0] == Token(f"[EMAIL_5] and {EMAIL}")
    assert isinstance(events[-1], Done)
    assert events[-1].provenance == {"unknown_placeholders": ["[EMAIL_5]"]}


def test_restored_events_come_primed_and_close_the_answer_they_wrap() -> None:
    closed: list[bool] = []

    async def run() -> tuple[AnswerEvent, list[bool]]:
        inner = await answer_of([Token("one"), Token("two"), DONE], closed)
        events = await restored_events(inner, household_vault())
        first = await anext(events)
        await events.aclose()
        return first, list(closed)  # before the loop's end closes what is left over

    assert asyncio.run(run()) == (Token("one"), [True])


def test_restored_events_closed_before_any_token_still_close_the_answer() -> None:
    closed: list[bool] = []

    async def run() -> list[bool]:
        inner = await answer_of([Token("one"), DONE], closed)
        events = await restored_events(inner, household_vault())
        await events.aclose()
        return list(closed)  # before the loop's end closes what is left over

    assert asyncio.run(run()) == [True]


def test_restored_events_never_pass_the_priming_event_on() -> None:
    async def run() -> list[AnswerEvent]:
        return await collected(await restored_events(await answer_of([DONE]), Vault()))

    events = asyncio.run(run())

    assert PRIMING not in events and events == [DONE]


def test_concurrent_streamed_conversations_never_see_each_others_values() -> None:
    async def conversation(number: int) -> str:
        vault = Vault()
        for turn in range(3):
            vault.placeholder("email", f"member{number}-{turn}@example.org")
        tokens: list[Any] = [Token(piece) for piece in "[EMAIL_1], [EMAIL_2] & [EMAIL_3]"]
        events = await restored_events(await answer_of([*tokens, DONE]), vault)
        return "".join([event.text async for event in events if isinstance(event, Token)])

    async def run() -> list[str]:
        return await asyncio.gather(*(conversation(number) for number in range(20)))

    answers = asyncio.run(run())

    for number, answer in enumerate(answers):
        mine = [f"member{number}-{turn}@example.org" for turn in range(3)]
        assert answer == f"{mine[0]}, {mine[1]} & {mine[2]}"
