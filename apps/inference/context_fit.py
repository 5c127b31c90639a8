"""Fitting a conversation into the engine's per-slot context by leaving out its oldest turns.

Pure: the engine hands in its tokenizer. The leading system messages and the last message
(the question) are always kept; what goes are whole exchanges (a user message and what
followed it) from the oldest on, so the kept part starts with a user turn.

The point where the conversation is cut moves in steps, not on every turn: a new request
reuses the KV cache of the longest token prefix a slot already holds, so a cut that moved
with each turn would make every turn read the whole prompt again. Exchanges are put in
"epochs" by the tokens of the conversation before them, counted from its start; an epoch
depends only on earlier messages, and only whole epochs are left out. Consecutive turns
therefore send the same messages from the same first one until the conversation has grown
by about an epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

Message = dict[str, str]
# For the epochs each message counts as its text's tokens plus this, for the role and the
# template's markers: a count that depends on the message alone, so epochs never move. What
# must fit the context is the rendered prompt.
MESSAGE_OVERHEAD_TOKENS = 8


class Overflow(StrEnum):
    """What the engine does with a prompt longer than the context."""

    REFUSE = "refuse"  # as OpenAI does: the /v1 API's clients expect context_length_exceeded
    DROP_OLDEST = "drop_oldest"  # the dashboard's chat: the conversation goes on


class ContextExceeded(ValueError):
    """Even the system messages and the last message alone do not fit the context."""


@dataclass(frozen=True)
class Fitted:
    messages: list[Message]
    tokens: list[int]  # the rendered prompt of `messages`
    dropped: int  # how many of the oldest messages were left out


def answer_room(max_tokens: int, context: int) -> int:
    """The tokens kept free for the answer when older turns have to go.

    The request's max_tokens, but at most half the context: a dashboard asking for 512 tokens
    of a 256-token context would otherwise leave nothing of the conversation. It is room held
    free, not a limit: the answer may still go on to the end of the context.
    """
    return max(1, min(max_tokens, context // 2))


def epoch_tokens(context: int) -> int:
    """A quarter of the context: the cut moves at most once per that many tokens of
    conversation, and keeps at least about the prompt's room less one epoch of history."""
    return max(1, context // 4)


def fit_context(
    messages: Sequence[Message],
    tokenize_chat: Callable[[list[Message]], list[int]],
    count_text: Callable[[str], int],
    *,
    context: int,
    room: int,
) -> Fitted:
    """The messages to send (and their tokens): all of them if they leave `room` tokens free
    in the context, else without as few of the oldest epochs as needed."""
    messages = list(messages)
    whole = tokenize_chat(messages)
    if len(whole) + room <= context:
        return Fitted(messages, whole, 0)
    # The last message is kept even when it is a system message.
    lead = min(_leading_system(messages), len(messages) - 1)
    system, rest = messages[:lead], messages[lead:]
    weights = [count_text(message["content"]) + MESSAGE_OVERHEAD_TOKENS for message in rest]
    cuts = _epoch_starts(rest, weights, epoch_tokens(context))
    cut, tokens = _fewest_dropped(
        cuts, lambda cut: tokenize_chat(system + rest[cut:]), context - room
    )
    if len(tokens) >= context:  # not even one token of answer would fit
        raise ContextExceeded(
            f"The question is {len(tokens)} tokens with the system prompt, but the context per "
            f"sequence is {context} tokens (and must leave room for at least one generated token)."
        )
    return Fitted(system + rest[cut:], tokens, cut)


def _fewest_dropped(
    cuts: list[int], tokens_from: Callable[[int], list[int]], limit: int
) -> tuple[int, list[int]]:
    """The first cut whose rendered prompt is at most `limit` tokens, or else the last one.

    The rendered prompt decides, not the epochs' estimate; it shrinks as the cut moves on,
    so halving finds the cut in a few renders.
    """
    rendered: dict[int, list[int]] = {}

    def tokens(cut: int) -> list[int]:
        if cut not in rendered:
            rendered[cut] = tokens_from(cut)
        return rendered[cut]

    low, high = 0, len(cuts) - 1
    while low < high:
        middle = (low + high) // 2
        if len(tokens(cuts[middle])) <= limit:
            high = middle
        else:
            low = middle + 1
    return cuts[low], tokens(cuts[low])


def _leading_system(messages: list[Message]) -> int:
    count = 0
    while count < len(messages) and messages[count]["role"] == "system":
        count += 1
    return count


def _epoch_starts(rest: list[Message], weights: list[int], epoch: int) -> list[int]:
    """Where the conversation may be cut, oldest first: the first exchange of each epoch
    after the first, and last of all, the last message alone."""
    cuts: list[int] = []
    before, current = 0, 0
    for index, message in enumerate(rest):
        starts_exchange = message["role"] == "user"
        if starts_exchange and index > 0 and before // epoch > current:
            current = before // epoch
            cuts.append(index)
        before += weights[index]
    last = len(rest) - 1
    return [cut for cut in cuts if cut < last] + [last]
