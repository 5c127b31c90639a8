"""Fitting a conversation into the context: what is kept, what goes, and that the cut holds
still from one turn to the next (so a slot's cached prefix stays of use)."""

from __future__ import annotations

import pytest

from apps.inference.context_fit import (
    ContextExceeded,
    Fitted,
    Message,
    answer_room,
    epoch_tokens,
    fit_context,
)

CONTEXT = 256


def tokenize_chat(messages: list[Message]) -> list[int]:
    """A stand-in template: a word is a token, each message adds three, the answer's cue one."""
    tokens: list[int] = []
    for message in messages:
        tokens += [1, 2] + [3] * len(message["content"].split()) + [4]
    return tokens + [5]


def count_text(text: str) -> int:
    return len(text.split())


def fit(messages: list[Message], room: int = 64, context: int = CONTEXT) -> Fitted:
    return fit_context(messages, tokenize_chat, count_text, context=context, room=room)


def words(n: int, tag: str) -> str:
    return " ".join([tag] * n)


def conversation(turns: int, size: int = 20) -> list[Message]:
    """`turns` exchanges of a question and an answer of `size` words each."""
    messages = []
    for turn in range(turns):
        messages.append({"role": "user", "content": words(size, f"q{turn}")})
        messages.append({"role": "assistant", "content": words(size, f"a{turn}")})
    return messages


SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def question(n: int) -> Message:
    return {"role": "user", "content": f"Question {n}?"}


def test_a_conversation_that_fits_is_sent_whole() -> None:
    messages = [SYSTEM, *conversation(2), question(0)]

    fitted = fit(messages)

    assert fitted.dropped == 0
    assert fitted.messages == messages
    assert fitted.tokens == tokenize_chat(messages)


def test_the_oldest_exchanges_go_and_the_system_prompt_and_question_stay() -> None:
    messages = [SYSTEM, *conversation(12), question(0)]

    fitted = fit(messages)

    assert fitted.dropped > 0
    assert fitted.dropped % 2 == 0  # whole exchanges
    assert fitted.messages[0] == SYSTEM
    assert fitted.messages[1]["role"] == "user"
    assert fitted.messages[-1] == question(0)
    assert fitted.messages[1:] == messages[1 + fitted.dropped :]
    assert len(fitted.tokens) + 64 <= CONTEXT
    assert fitted.tokens == tokenize_chat(fitted.messages)


def test_the_cut_moves_in_epochs_not_on_every_turn() -> None:
    """Turn after turn the same oldest messages go, until the conversation has grown by
    about an epoch: then the cut moves, and only forward."""
    context, cuts = 1024, []
    history: list[Message] = []
    for turn in range(120):
        fitted = fit([SYSTEM, *history, question(turn)], context=context)
        cuts.append(fitted.dropped)
        history += [question(turn), {"role": "assistant", "content": words(12, f"a{turn}")}]

    overflowing = [cut for cut in cuts if cut > 0]
    assert len(overflowing) > 60
    assert cuts == sorted(cuts)  # never back
    moves = sum(1 for before, after in zip(cuts, cuts[1:], strict=False) if after != before)
    # An exchange counts 30 tokens (two messages of 2 and 12 words, 8 each for the template)
    # and an epoch is a quarter of the context: the cut moves about once in eight turns.
    grown = len(overflowing) * 30
    assert moves <= grown // epoch_tokens(context) + 2  # and the first cut
    assert moves < len(overflowing) / 6


def test_the_rendered_prompt_is_what_must_fit() -> None:
    """A template far longer per message than the epochs' count of it: more epochs go."""

    def heavy_template(messages: list[Message]) -> list[int]:
        return [0] * 20 * len(messages) + tokenize_chat(messages)

    messages = [*conversation(12, size=6), question(0)]
    fitted = fit_context(messages, heavy_template, count_text, context=CONTEXT, room=64)

    assert len(fitted.tokens) + 64 <= CONTEXT
    assert fitted.dropped > fit(messages).dropped


def test_only_the_system_prompt_and_question_when_nothing_else_fits() -> None:
    messages = [SYSTEM, *conversation(3), {"role": "user", "content": words(150, "long")}]

    fitted = fit(messages, room=128)  # the question leaves less than the room: it is answered

    assert fitted.messages == [SYSTEM, messages[-1]]
    assert fitted.dropped == 6


def test_it_refuses_when_even_the_system_prompt_and_question_do_not_fit() -> None:
    messages = [SYSTEM, *conversation(3), {"role": "user", "content": words(300, "long")}]

    with pytest.raises(ContextExceeded, match="context per sequence is 256 tokens"):
        fit(messages)


def test_every_leading_system_message_is_kept() -> None:
    note = {"role": "system", "content": "A note of what came before."}
    messages = [SYSTEM, note, *conversation(12), question(0)]

    fitted = fit(messages)

    assert fitted.messages[:2] == [SYSTEM, note]
    assert fitted.dropped > 0
    assert fitted.messages[2:] == messages[2 + fitted.dropped :]


def test_the_room_for_the_answer_is_max_tokens_up_to_half_the_context() -> None:
    assert answer_room(100, 2048) == 100
    assert answer_room(512, 256) == 128
