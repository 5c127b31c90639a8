"""Continuous batching on the real SmolLM2-135M GGUF (no Django, no database)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from apps.inference.batching import BatchedGenerator, PromptTooLong, SamplingParams, TokenEvent
from apps.inference.services import bundled_model_file

GREEDY = SamplingParams(max_tokens=32, temperature=0)
PROMPTS = [
    "Write a short story about a dragon who lives in a castle.",
    "Explain how a bicycle works.",
    "What is the history of bread?",
    "Describe the water cycle step by step.",
]


def _model_path() -> str:
    return str(bundled_model_file())


@pytest.fixture(scope="module")
def gen() -> Iterator[BatchedGenerator]:
    generator = BatchedGenerator(_model_path(), slots=4, context_per_slot=512, threads=2)
    yield generator
    generator.close()


@pytest.fixture(autouse=True)
def _idle_between_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "gen" in request.fixturenames:
        generator: BatchedGenerator = request.getfixturevalue("gen")
        assert not generator.busy, "a test left requests running"


def chat(gen: BatchedGenerator, text: str) -> list[int]:
    return gen.tokenize_chat([{"role": "user", "content": text}])


def drain(gen: BatchedGenerator, max_steps: int = 2000) -> dict[str, list[TokenEvent]]:
    events: dict[str, list[TokenEvent]] = {}
    for _ in range(max_steps):
        if not gen.busy:
            return events
        for event in gen.step():
            events.setdefault(event.request_id, []).append(event)
    raise AssertionError("the generator did not go idle")


def text_of(events: list[TokenEvent]) -> str:
    assert events[-1].finished, "the request did not finish"
    assert sum(e.finished for e in events) == 1, "more than one final event"
    return "".join(e.text for e in events)


def run_alone(gen: BatchedGenerator, prompt: list[int], params: SamplingParams) -> TokenEvent:
    gen.add("alone", prompt, params)
    events = drain(gen)["alone"]
    last = events[-1]
    return TokenEvent(
        "alone",
        text_of(events),
        True,
        last.finish_reason,
        last.prompt_tokens,
        last.completion_tokens,
    )


def test_chat_template_is_the_models_own(gen: BatchedGenerator) -> None:
    tokens = gen.tokenize_chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    expected += "<|im_start|>assistant\n"
    assert tokens == gen.tokenize(expected, parse_special=True)
    assert tokens[0] == gen.tokenize("<|im_start|>", parse_special=True)[0]  # one special token


def test_greedy_output_is_the_same_alone_and_batched(gen: BatchedGenerator) -> None:
    prompts = [chat(gen, p) for p in PROMPTS]
    alone = run_alone(gen, prompts[1], GREEDY).text
    assert alone

    # All four at once, the one under test not first: its prompt is decoded in the same
    # batches as the others' prompts and its tokens next to theirs.
    for i in (0, 1, 2, 3):
        gen.add(f"r{i}", prompts[i], GREEDY)
    events = drain(gen)
    assert text_of(events["r1"]) == alone
    assert len({text_of(events[f"r{i}"]) for i in range(4)}) == 4

    # Joining while the others are mid-generation.
    for i in (0, 2, 3):
        gen.add(f"r{i}", prompts[i], GREEDY)
    for _ in range(5):
        gen.step()
    gen.add("r1", prompts[1], GREEDY)
    assert text_of(drain(gen)["r1"]) == alone


def test_four_concurrent_requests_all_finish_with_text(gen: BatchedGenerator) -> None:
    params = SamplingParams(max_tokens=24, temperature=0.8, seed=7)
    for i, prompt in enumerate(PROMPTS):
        gen.add(f"c{i}", chat(gen, prompt), params)
    first = gen.step()
    assert gen.n_active == 4 and gen.n_queued == 0
    assert {e.request_id for e in first} == {f"c{i}" for i in range(4)}  # one batch for all
    events = drain(gen)
    for i in range(4):
        evs = [e for e in first if e.request_id == f"c{i}"] + events[f"c{i}"]
        assert text_of(evs).strip()
        assert evs[-1].finish_reason in ("stop", "length")
        assert 0 < evs[-1].completion_tokens <= 24
        assert evs[-1].prompt_tokens == len(chat(gen, PROMPTS[i]))


def test_same_seed_same_text_other_seed_other_text(gen: BatchedGenerator) -> None:
    prompt = chat(gen, "Invent a name for a new colour and describe it.")

    def sample(seed: int) -> str:
        params = SamplingParams(max_tokens=32, temperature=1.0, top_p=0.95, seed=seed)
        return run_alone(gen, prompt, params).text

    first = sample(1234)
    assert sample(1234) == first
    assert sample(99) != first


def test_max_tokens_finishes_with_length(gen: BatchedGenerator) -> None:
    result = run_alone(
        gen, chat(gen, "Count from 1 to 100."), SamplingParams(max_tokens=5, temperature=0)
    )
    assert result.finish_reason == "length"
    assert result.completion_tokens == 5
    assert result.text


def test_stop_string_split_across_tokens_is_cut(gen: BatchedGenerator) -> None:
    prompt = chat(gen, PROMPTS[3])
    gen.add("ref", prompt, GREEDY)
    pieces = [e.text for e in drain(gen)["ref"]]
    reference = "".join(pieces)
    # A stop string made of the end of one token's text and the start of the next one's.
    k = next(
        i
        for i in range(3, len(pieces) - 1)
        if len(pieces[i].strip()) >= 2 and len(pieces[i + 1].strip()) >= 2
    )
    stop = pieces[k][-2:] + pieces[k + 1][:2]
    expected = reference[: reference.index(stop)]

    result = run_alone(gen, prompt, SamplingParams(max_tokens=32, temperature=0, stop=(stop,)))
    assert result.finish_reason == "stop"
    assert result.text == expected
    assert stop not in result.text


def test_multibyte_characters_split_across_tokens(gen: BatchedGenerator) -> None:
    gen.add(
        "emoji", chat(gen, "Reply with three emoji."), SamplingParams(max_tokens=12, temperature=0)
    )
    events = drain(gen)["emoji"]
    text = text_of(events)
    assert any(e.text == "" and not e.finished for e in events), "no character was split"
    assert "\ufffd" not in text
    assert any(ord(c) > 0xFFFF for c in text)


def test_cancel_frees_the_slot_for_a_queued_request(gen: BatchedGenerator) -> None:
    long = SamplingParams(max_tokens=400, temperature=0)
    for i, prompt in enumerate(PROMPTS):
        gen.add(f"busy{i}", chat(gen, prompt), long)
    for _ in range(3):
        gen.step()
    gen.add("fifth", chat(gen, "Name three colours."), SamplingParams(max_tokens=8, temperature=0))
    gen.step()
    assert gen.n_active == 4 and gen.n_queued == 1

    gen.cancel("busy2")
    assert gen.n_active == 3  # freed at once, not at the next step
    events = gen.step()
    cancelled = [e for e in events if e.request_id == "busy2"]
    assert len(cancelled) == 1 and cancelled[0].finished
    assert cancelled[0].finish_reason == "cancelled" and cancelled[0].text == ""
    assert gen.n_active == 4 and gen.n_queued == 0  # the fifth one took the slot

    for _ in range(60):  # the fifth one runs to the end next to the three long ones
        if any(e.request_id == "fifth" and e.finished for e in gen.step()):
            break
    else:
        raise AssertionError("the queued request never finished")

    for i in (0, 1, 3):
        gen.cancel(f"busy{i}")
    gen.cancel("unknown")  # ignored
    rest = drain(gen)
    assert {r: e[-1].finish_reason for r, e in rest.items()} == {
        "busy0": "cancelled",
        "busy1": "cancelled",
        "busy3": "cancelled",
    }


def test_cancel_a_queued_request(gen: BatchedGenerator) -> None:
    gen.add("q", chat(gen, "Hello"), GREEDY)
    gen.cancel("q")
    events = drain(gen)
    assert [(e.finished, e.finish_reason) for e in events["q"]] == [(True, "cancelled")]


def test_prompt_longer_than_the_context_is_refused_and_context_ends_generation() -> None:
    with BatchedGenerator(_model_path(), slots=2, context_per_slot=64, threads=2) as small:
        prompt = small.tokenize("the quick brown fox " * 40)
        assert len(prompt) > 64
        with pytest.raises(PromptTooLong, match=rf"{len(prompt)} tokens.*context.*is 64 tokens"):
            small.add("long", prompt, GREEDY)
        assert not small.busy

        # A prompt that fits runs until the context is full: positions 60..63 are decoded
        # and the token sampled after the last one is the fifth and final one.
        small.add("fits", prompt[:60], SamplingParams(max_tokens=100, temperature=0))
        last = drain(small)["fits"][-1]
        assert (last.finish_reason, last.completion_tokens) == ("length", 5)


def test_long_prompt_is_chunked_next_to_a_running_stream() -> None:
    with BatchedGenerator(
        _model_path(), slots=2, context_per_slot=512, threads=2, batch_size=32
    ) as small:
        small.add(
            "short",
            small.tokenize("Once upon a time"),
            SamplingParams(max_tokens=64, temperature=0),
        )
        small.step()
        long_prompt = small.tokenize("the quick brown fox jumps over the lazy dog. " * 20)
        small.add("long", long_prompt, GREEDY)
        # While the long prompt is read, 31 tokens a step, every step still advances the
        # short stream by one token.
        steps = 0
        while True:
            events = small.step()
            steps += 1
            assert [e.request_id for e in events if e.request_id == "short"] == ["short"]
            if any(e.request_id == "long" for e in events):
                break
        assert steps == -(-len(long_prompt) // 31) > 3
        small.cancel("short")
        small.cancel("long")
        drain(small)


def test_grammar_constrains_each_sequence_independently(gen: BatchedGenerator) -> None:
    prompt = chat(gen, "Is the sky blue? Answer yes or no.")
    grammar = 'root ::= "yes" | "no"'
    for seed in (1, 2, 3):
        gen.add(f"g{seed}", prompt, SamplingParams(max_tokens=8, seed=seed, grammar=grammar))
    gen.add("free", prompt, SamplingParams(max_tokens=8, temperature=0))
    events = drain(gen)
    for seed in (1, 2, 3):
        assert text_of(events[f"g{seed}"]) in ("yes", "no")
        assert events[f"g{seed}"][-1].finish_reason == "stop"
    assert text_of(events["free"]) not in ("yes", "no")


def test_bad_requests_are_refused(gen: BatchedGenerator) -> None:
    with pytest.raises(ValueError, match="GBNF"):
        gen.add("bad", [1, 2, 3], SamplingParams(grammar="root ::= ???"))
    with pytest.raises(ValueError, match="no tokens"):
        gen.add("empty", [], GREEDY)
    with pytest.raises(ValueError, match="vocabulary"):
        gen.add("oov", [10**9], GREEDY)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    gen.add("dup", [1, 2, 3], GREEDY)
    with pytest.raises(ValueError, match="already"):
        gen.add("dup", [1, 2, 3], GREEDY)
    gen.cancel("dup")
    drain(gen)


def test_close_frees_everything() -> None:
    generator = BatchedGenerator(_model_path(), slots=2, context_per_slot=128, threads=2)
    generator.add("a", generator.tokenize("Hello"), GREEDY)
    generator.step()
    generator.close()
    generator.close()  # idempotent
    assert not generator.busy
    with pytest.raises(RuntimeError, match="closed"):
        generator.step()


def test_top_p_zero_keeps_only_the_likeliest_token(gen: BatchedGenerator) -> None:
    prompt = chat(gen, PROMPTS[1])
    greedy = run_alone(gen, prompt, GREEDY).text

    hot_but_narrow = SamplingParams(max_tokens=32, temperature=1.5, top_p=0, seed=7)

    assert run_alone(gen, prompt, hot_but_narrow).text == greedy


def test_by_default_llama_cpp_uses_all_the_cores_for_one_token_as_for_a_batch() -> None:
    cores = os.cpu_count() or 1
    with BatchedGenerator(_model_path(), slots=1, context_per_slot=64) as generator:
        assert generator.thread_counts == (cores, cores)


def test_a_thread_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="threads must be at least 1, not 0"):
        BatchedGenerator(_model_path(), slots=1, context_per_slot=64, threads=0)


def test_the_thread_counts_can_change_between_steps(gen: BatchedGenerator) -> None:
    before = run_alone(gen, chat(gen, PROMPTS[1]), GREEDY)
    gen.set_threads(1, 2)
    try:
        assert gen.thread_counts == (1, 2)
        after = run_alone(gen, chat(gen, PROMPTS[1]), GREEDY)
        with pytest.raises(ValueError, match="at least 1, not 0 and 2"):
            gen.set_threads(0, 2)
    finally:
        gen.set_threads(2, 2)
    assert after == before  # the same greedy text, whatever the threads
