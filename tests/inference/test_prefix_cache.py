"""Prefix reuse on the real SmolLM2-135M GGUF: a slot keeps its last sequence's KV cache, and a
request decodes only what its prompt does not share with a free slot's cache.

Answers are compared bit for bit in reproducible mode, where a token's cells do not depend on
how its prompt was split; by default llama.cpp's faster kernels for 64 tokens and more round
differently, and a near-tie may go the other way."""

from __future__ import annotations

from collections.abc import Iterator

import llama_cpp.llama_cpp as llama
import pytest

from apps.inference import batching
from apps.inference.batching import (
    REPRODUCIBLE_PROMPT_CHUNK,
    BatchedGenerator,
    SamplingParams,
    TokenEvent,
)
from apps.inference.services import bundled_model_file

GREEDY = SamplingParams(max_tokens=24, temperature=0)
SYSTEM = {"role": "system", "content": "You are a patient tutor. Answer in one sentence."}
QUESTIONS = ["What is a lighthouse?", "Who keeps it?", "Why does the light turn?"]
# A long shared system prompt, as a household might give every member's chat.
HOUSE_RULES = " ".join(
    f"Rule {n}: be kind, be brief, and say when you do not know something." for n in range(1, 25)
)


def generator(
    slots: int = 2, prompt_chunk: int | None = REPRODUCIBLE_PROMPT_CHUNK
) -> BatchedGenerator:
    return BatchedGenerator(
        str(bundled_model_file()),
        slots=slots,
        context_per_slot=1024,
        threads=2,
        prompt_chunk=prompt_chunk,
    )


@pytest.fixture
def gen() -> Iterator[BatchedGenerator]:
    with generator() as two_slots:
        yield two_slots


def run(
    gen: BatchedGenerator, messages: list[dict[str, str]], request_id: str, cache_group: str = ""
) -> TokenEvent:
    """Answer alone; the final event, carrying the whole text in `text`."""
    gen.add(request_id, gen.tokenize_chat(messages), GREEDY, cache_group)
    parts: list[str] = []
    for _ in range(2000):
        for event in gen.step():
            parts.append(event.text)
            if event.finished:
                return TokenEvent(**{**event.__dict__, "text": "".join(parts)})
    raise AssertionError("the request did not finish")


def conversation(gen: BatchedGenerator, turns: int) -> list[tuple[list[int], TokenEvent]]:
    """A chat of `turns` questions, each sent with the whole conversation so far."""
    messages, answered = [SYSTEM], []
    for turn, question in enumerate(QUESTIONS[:turns]):
        messages.append({"role": "user", "content": question})
        prompt = gen.tokenize_chat(messages)
        answer = run(gen, messages, f"turn-{turn}")
        answered.append((prompt, answer))
        messages.append({"role": "assistant", "content": answer.text})
    return answered


def kv_cells(gen: BatchedGenerator, seq_id: int) -> int:
    """How many positions llama.cpp's own memory holds for a sequence."""
    return int(llama.llama_memory_seq_pos_max(gen._memory, seq_id)) + 1


def assert_slots_match_memory(gen: BatchedGenerator) -> None:
    for slot in gen.slot_states():
        assert slot.cached_tokens == kv_cells(gen, slot.seq_id), slot


@pytest.mark.parametrize("prompt_chunk", [None, REPRODUCIBLE_PROMPT_CHUNK])
def test_a_second_turn_decodes_only_the_new_tokens(prompt_chunk: int | None) -> None:
    with generator(prompt_chunk=prompt_chunk) as gen:
        (first_prompt, first), (second_prompt, second) = conversation(gen, 2)
        assert_slots_match_memory(gen)

    assert first.cached_tokens == 0
    # The first turn's prompt and answer were decoded once; the second turn finds them in the
    # slot and decodes from where its prompt differs: the end of the answer, the new question.
    kept = len(first_prompt) + first.completion_tokens
    assert len(first_prompt) < second.cached_tokens <= kept
    decoded = second.prompt_tokens - second.cached_tokens
    new = len(second_prompt) - kept
    assert 0 < decoded <= new + 3, (decoded, new)


def test_a_long_prompt_is_read_in_large_chunks_by_default_and_small_ones_when_reproducible() -> (
    None
):
    text = [{"role": "user", "content": HOUSE_RULES}]
    steps = {}
    for chunk in (None, REPRODUCIBLE_PROMPT_CHUNK):
        with generator(prompt_chunk=chunk) as gen:
            length = len(gen.tokenize_chat(text))
            gen.add("long", gen.tokenize_chat(text), SamplingParams(max_tokens=1))
            steps[chunk] = 0
            while gen.busy:
                gen.step()
                steps[chunk] += 1
    assert steps[None] == -(-length // 256)
    assert steps[REPRODUCIBLE_PROMPT_CHUNK] == -(-length // REPRODUCIBLE_PROMPT_CHUNK)


def test_greedy_answers_are_identical_with_and_without_prefix_reuse(
    gen: BatchedGenerator,
) -> None:
    reused = conversation(gen, 3)
    assert all(answer.cached_tokens > 0 for _, answer in reused[1:])

    with generator(slots=1) as fresh:
        messages = [SYSTEM]
        for (_, answer), question in zip(reused, QUESTIONS, strict=True):
            messages.append({"role": "user", "content": question})
            alone = run(fresh, messages, "fresh")
            unrelated = fresh.tokenize("Zebra", add_special=False)
            fresh.add("clear", unrelated, SamplingParams(max_tokens=1, temperature=0))
            while fresh.busy:  # a one-token prompt: the next turn shares nothing with it
                fresh.step()
            assert alone.cached_tokens == 0
            assert alone.text == answer.text
            messages.append({"role": "assistant", "content": answer.text})


def test_two_members_with_one_long_system_prompt_share_only_its_tokens(
    gen: BatchedGenerator,
) -> None:
    alice = [{"role": "system", "content": HOUSE_RULES},
             {"role": "user", "content": "My password is tulip42. Is it strong?"}]  # fmt: skip
    bob = [{"role": "system", "content": HOUSE_RULES},
           {"role": "user", "content": "What is a strong password?"}]  # fmt: skip
    alice_answer = run(gen, alice, "alice")
    bob_answer = run(gen, bob, "bob")

    alice_tokens, bob_tokens = gen.tokenize_chat(alice), gen.tokenize_chat(bob)
    shared = batching._common_prefix(alice_tokens, bob_tokens)
    assert shared > 300  # the system prompt
    assert bob_answer.cached_tokens == shared  # that prefix exactly, nothing of Alice's own
    assert "tulip42" not in bob_answer.text

    with generator(slots=1) as fresh:
        assert run(fresh, bob, "bob").text == bob_answer.text
    # Alice comes back: her question is read again, and her answer is the same as before.
    again = run(gen, alice, "alice-again")
    assert again.text == alice_answer.text
    assert again.cached_tokens >= shared


def test_a_prompt_is_never_reused_across_cache_groups(gen: BatchedGenerator) -> None:
    """A stranger (or a friend) learns nothing of what the household asked from how many of
    their prompt's tokens were found cached, nor the household of them."""
    household = [{"role": "system", "content": HOUSE_RULES},
                 {"role": "user", "content": "My diagnosis is"}]  # fmt: skip
    run(gen, household, "household", cache_group="household")
    probe = run(gen, household, "stranger", cache_group="sale:1")
    assert probe.cached_tokens == 0

    # Both slots now hold the same prompt, one for each group: each reuses only its own.
    again = run(gen, household, "household-again", cache_group="household")
    assert again.cached_tokens == len(gen.tokenize_chat(household)) - 1
    other = run(gen, household, "another-stranger", cache_group="sale:2")
    assert other.cached_tokens == 0


def test_cancelling_mid_prompt_or_mid_answer_leaves_each_slot_with_what_it_decoded(
    gen: BatchedGenerator,
) -> None:
    long_question = [{"role": "user", "content": HOUSE_RULES + " Which rule is the longest?"}]
    expected = run(gen, long_question, "expected").text
    gen.add("other", gen.tokenize_chat([SYSTEM, {"role": "user", "content": "Hi"}]), GREEDY)
    gen.step()  # "other" takes the slot holding the long question's cache

    gen.add("reading", gen.tokenize_chat(long_question), GREEDY)
    gen.step()
    gen.step()  # the prompt of several hundred tokens is half read
    gen.cancel("other")
    gen.cancel("reading")
    events = gen.step()
    assert {e.request_id: e.finish_reason for e in events} == {
        "other": "cancelled",
        "reading": "cancelled",
    }
    assert_slots_match_memory(gen)
    assert max(slot.cached_tokens for slot in gen.slot_states()) > 0

    again = run(gen, long_question, "again")
    assert again.text == expected
    assert_slots_match_memory(gen)


def test_a_decode_that_fails_mid_answer_empties_its_slot(
    gen: BatchedGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [SYSTEM, {"role": "user", "content": QUESTIONS[0]}]
    expected = run(gen, messages, "expected").text
    real_decode, calls = llama.llama_decode, []

    def failing_decode(ctx: object, batch: object) -> int:
        calls.append(1)
        return -1 if len(calls) == 4 else int(real_decode(ctx, batch))

    monkeypatch.setattr(batching.llama, "llama_decode", failing_decode)
    gen.add("broken", gen.tokenize_chat(messages), GREEDY)
    finals = [e for _ in range(6) for e in gen.step() if e.finished]
    assert [(e.request_id, e.finish_reason) for e in finals] == [("broken", "error")]
    monkeypatch.setattr(batching.llama, "llama_decode", real_decode)

    assert_slots_match_memory(gen)
    assert sorted(slot.cached_tokens for slot in gen.slot_states())[0] == 0
    again = run(gen, messages, "again")
    assert again.text == expected


def test_an_exception_during_a_step_empties_the_slots_of_that_batch(
    gen: BatchedGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [SYSTEM, {"role": "user", "content": QUESTIONS[1]}]
    gen.add("doomed", gen.tokenize_chat(messages), GREEDY)

    def crash(ctx: object, batch: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(batching.llama, "llama_decode", crash)
    with pytest.raises(KeyboardInterrupt):
        gen.step()
    assert_slots_match_memory(gen)
    assert all(slot.cached_tokens == 0 for slot in gen.slot_states())
