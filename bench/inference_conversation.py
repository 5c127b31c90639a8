"""bench/inference.py's scripted conversation: the same ten questions put to every contender,
each turn sending the whole conversation so far, as a chat client does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.inference_contenders import Contender, Stream

ANSWER_TOKENS = 24  # at most, greedy
SYSTEM = "You are a helpful assistant in a household. Answer briefly and plainly."
QUESTIONS = [
    "What vegetables grow well in a small balcony garden?",
    "How often should I water tomatoes in the summer?",
    "Which of those vegetables needs the most sunlight?",
    "What kind of soil should I buy for the pots?",
    "How do I keep aphids away without using chemicals?",
    "When is the best time to plant basil outdoors?",
    "Can I grow strawberries in a hanging basket?",
    "How can I tell when a tomato is ripe?",
    "What should I do with the plants in the winter?",
    "Can you sum up the three most important tips?",
]
REPORTED_TURNS = (1, 5, 10)

Message = dict[str, str]


@dataclass
class Conversation:
    """One contender's side of conversation `number`: one stream a turn."""

    number: int
    turns: list[Stream]

    @property
    def answers(self) -> list[str]:
        return [stream.text for stream in self.turns]


def messages(number: int, answers: list[str], turn: int) -> list[Message]:
    """What turn `turn` (from 1) of conversation `number` sends: the system prompt, the
    questions up to this turn's and the contender's own answers to the earlier ones.

    The conversation's number opens the system prompt, so that no contender's cache holds a
    prefix of it beyond the chat template's first tokens: each conversation is read afresh."""
    sent = [{"role": "system", "content": f"Conversation {number}. {SYSTEM}"}]
    for question, answer in zip(QUESTIONS[: turn - 1], answers, strict=True):
        sent += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*sent, {"role": "user", "content": QUESTIONS[turn - 1]}]


def converse(contenders: list[Contender], number: int) -> dict[str, Conversation]:
    """Conversation `number` with each contender, interleaved: turn k of every contender
    before turn k + 1 of any. Each contender is its own process with its own cache, so the
    others' turns in between do not disturb it."""
    held = {contender.name: Conversation(number, []) for contender in contenders}
    for turn in range(1, len(QUESTIONS) + 1):
        for contender in contenders:
            conversation = held[contender.name]
            sent = messages(number, conversation.answers, turn)
            conversation.turns.append(contender.send(sent, ANSWER_TOKENS, None))
    return held
