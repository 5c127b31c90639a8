"""bench/inference.py's figures: the summary of each contender's streams and conversations,
the targets, and the section of docs/benchmarks.md that shows them."""

from __future__ import annotations

import statistics
import textwrap
from typing import TYPE_CHECKING, Any

from bench.inference_conversation import REPORTED_TURNS

if TYPE_CHECKING:
    from bench.inference_contenders import Stream
    from bench.inference_conversation import Conversation


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[round(0.95 * (len(ordered) - 1))]


def summarise(runs: dict[str, list[Any]], expected_tokens: int) -> dict[str, Any]:
    one: list[Stream] = runs["one"]
    figures: dict[str, Any] = {
        "one_stream_tokens_per_second": round(
            statistics.median(s.tokens_per_second for s in one), 1
        ),
        "one_stream_ttft_ms": round(1000 * statistics.median(s.ttft or 0 for s in one), 1),
        "one_stream_tokens": statistics.median(s.tokens for s in one),
        "serving_cpu_ms_per_token": round(
            1000 * statistics.median(s.serving_cpu / max(s.tokens, 1) for s in one), 3
        ),
    }
    if runs["conversation"]:
        figures |= summarise_conversation(runs["conversation"])
    rounds: list[list[Stream]] = runs["many"]
    if not rounds:
        return figures
    streams = [s for round_ in rounds for s in round_]
    aggregates = [
        sum(s.tokens for s in round_)
        / (max(s.last or s.sent for s in round_) - min(s.sent for s in round_))
        for round_ in rounds
    ]
    ttfts = [s.ttft for s in streams if s.ttft is not None]
    figures |= {
        "many_aggregate_tokens_per_second": round(statistics.median(aggregates), 1),
        "many_slowest_tokens_per_second": round(
            statistics.median(min(s.tokens_per_second for s in r) for r in rounds), 1
        ),
        "many_ttft_p95_ms": round(1000 * p95(ttfts), 1) if ttfts else None,
        "many_streams": len(streams),
        "many_failed": sum(bool(s.error) for s in streams),
        "many_empty": sum(not s.error and not s.tokens for s in streams),
        "many_cut_short": sum(0 < s.tokens < expected_tokens for s in streams),
    }
    errors = sorted({s.error for s in streams if s.error})
    if errors:
        figures["many_errors"] = errors[:3]
    return figures


def median_ttft_ms(streams: list[Stream]) -> float | None:
    ttfts = [s.ttft for s in streams if s.ttft is not None and not s.error]
    return round(1000 * statistics.median(ttfts), 1) if ttfts else None


def summarise_conversation(conversations: list[Conversation]) -> dict[str, Any]:
    """TTFT medians of the reported turns over all conversations, turn 10's over turn 1's,
    and the median over every turn."""
    by_turn = {
        str(turn): median_ttft_ms([c.turns[turn - 1] for c in conversations])
        for turn in REPORTED_TURNS
    }
    first, last = by_turn[str(REPORTED_TURNS[0])], by_turn[str(REPORTED_TURNS[-1])]
    streams = [stream for conversation in conversations for stream in conversation.turns]
    return {
        "conversation_ttft_ms": by_turn,
        "conversation_ttft_last_to_first": round(last / first, 3) if first and last else None,
        "conversation_ttft_median_ms": median_ttft_ms(streams),
        "conversation_answer_tokens": statistics.median(s.tokens for s in streams),
        "conversation_turns_measured": len(streams),
        "conversation_failed": sum(bool(s.error) or not s.tokens for s in streams),
    }


# -- the run --------------------------------------------------------------------------------


def targets(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = figures["contenders"]["raw llama-cpp-python"]
    ours = figures["contenders"]["Sovereign /v1"]
    raw_rate = raw["one_stream_tokens_per_second"]
    ttft_gap = ours["one_stream_ttft_ms"] - raw["one_stream_ttft_ms"]
    of_ceiling = (
        ours["many_aggregate_tokens_per_second"] / figures["decode_ceiling_tokens_per_second"]
    )
    checks: dict[str, tuple[float | None, float, str]] = {
        "one_stream_rate": (ours["one_stream_tokens_per_second"] / raw_rate, 0.95, ">="),
        "one_stream_ttft_above_raw_ms": (ttft_gap, 20, "<="),
        "conversation_turn_10_to_turn_1": (ours["conversation_ttft_last_to_first"], 1.3, "<="),
        "many_aggregate_of_ceiling": (of_ceiling, 0.9, ">="),
        "many_empty_or_failed": (ours["many_empty"] + ours["many_failed"], 0, "<="),
        "many_slowest_rate": (ours["many_slowest_tokens_per_second"] / raw_rate, 0.3, ">="),
        "one_copy_of_weights_mb": (ours["weights_mapped_mb"], figures["model_file_mb"], "<="),
        "peak_memory_mb": (ours["peak_memory_mb"], figures["engine_memory_bound_mb"], "<="),
    }
    return {
        name: {
            "value": None if value is None else round(value, 4),
            "target": target,
            # No value (a turn that failed in every conversation) is not met.
            "met": value is not None and (value >= target if sense == ">=" else value <= target),
        }
        for name, (value, target, sense) in checks.items()
    }


def paragraph(text: str) -> list[str]:
    return textwrap.wrap(" ".join(text.split()), width=92)


def render(figures: dict[str, Any]) -> str:
    f = figures
    lines = [
        *paragraph(
            f"""`bench/inference.py`: {f["model"]} ({f["model_file_mb"]} MB), the same chat
            prompt ({f["prompt_tokens"]} tokens with the chat template), greedy decoding (no
            penalties), at most {f["max_tokens"]} tokens, {f["threads"]} llama.cpp threads
            for one sequence and for batches, on {f["cores"]} cores (Sovereign's through
            `SOVEREIGN_ENGINE_THREADS`; its default follows the cores other processes
            leave idle, measured by `bench/threads.py`);
            {f["context"]} tokens of context per sequence (Sovereign: {f["streams"]} slots
            of {f["context"]}). Raw llama-cpp-python runs with flash attention, as the
            engine does (llama.cpp's default); llama_cpp.server with its own defaults (no
            flash attention). Each is used as its users use it: it keeps the KV cache of what
            it last read and reads of a new prompt only what follows the longest prefix they
            share (raw llama-cpp-python's `Llama` object and llama_cpp.server one sequence
            each; Sovereign's engine one per slot, a request going to the free slot that
            shares the longest prefix). So the repeated prompt is read from its last token
            on, and the one-stream TTFT is that of a cached prompt; reading a prompt afresh
            is timed by the conversation's first turn, below. Medians of
            {f["one_stream_repeats"]} rounds of one stream and {f["repeats"]} of
            {f["streams"]} streams, the contenders interleaved, after a warm-up of each; TTFT
            p95 over all streams of all rounds. Other people's tests share this machine: a
            measurement during which other processes took {f["quiet_share"]:.0%} or more of
            the CPU was taken again (up to {f["tries"]} times, the least disturbed kept);
            {f["measurements_disturbed"]} of {f["measurements"]} stayed above that."""
        ),
        "",
        *paragraph(
            """Definitions, the same for every contender, all timed by the client (for HTTP,
            a minimal reader of server-sent events): **TTFT** is from sending the request to
            the first non-empty content; a stream's **tokens/s** is its tokens (its text
            counted in the model's own tokens) divided by the time from sending the request
            to its last content; the **aggregate** is all streams' tokens divided by the time
            from sending the requests to the last content of any. A stream is **cut short**
            when it has fewer tokens than the raw single stream. **Peak memory** is the VmHWM
            of the process holding the model (the mapped weights count in it)."""
        ),
        "",
        f"| contender | 1 stream tok/s | 1 stream TTFT | {f['streams']} streams aggregate tok/s "
        "| slowest stream tok/s | TTFT p95 | empty / failed / cut short | peak memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in f["contenders"].items():
        if "many_streams" in c:
            many = (
                f"{c['many_aggregate_tokens_per_second']} | {c['many_slowest_tokens_per_second']} "
                f"| {c['many_ttft_p95_ms']} ms | {c['many_empty']} / {c['many_failed']} / "
                f"{c['many_cut_short']} of {c['many_streams']}"
            )
        else:
            many = "— | — | — | —"
        lines.append(
            f"| {name} | {c['one_stream_tokens_per_second']} | {c['one_stream_ttft_ms']} ms "
            f"| {many} | {c['peak_memory_mb']} MB |"
        )
    lines += ["", *conversation_lines(f), "", *target_lines(f)]
    lines += ["", *serving_lines(f), "", *step_lines(f)]
    return "\n".join(lines)


def conversation_lines(figures: dict[str, Any]) -> list[str]:
    f = figures
    turns = [str(turn) for turn in REPORTED_TURNS]
    tokens = f["conversation_prompt_tokens"]
    sizes = ", ".join(f"{tokens[t]} at turn {t}" for t in turns[1:-1])
    sizes = f"{tokens[turns[0]]} tokens at turn {turns[0]}, {sizes} and "
    sizes += f"{tokens[turns[-1]]} at turn {turns[-1]}"
    lines = [
        *paragraph(
            f"""A scripted conversation (`bench/inference_conversation.py`): a short system
            prompt, {f["conversation_turns"]} one-sentence questions, answers of at most
            {f["answer_tokens"]} tokens (greedy). Each turn sends the whole conversation so
            far (the system prompt, the earlier questions and the contender's own earlier
            answers), as a chat client does, and its TTFT is timed as above; with the chat
            template the prompt is {sizes} (Sovereign's first conversation). Raw
            llama-cpp-python, Sovereign and llama_cpp.server (one request at a time; with
            its defaults it answers a lone request the same way) each take turn k before
            any takes turn k + 1, in {f["repeats"]} conversations, each opening its system
            prompt with its own number, so that no cache holds it from an earlier one (a
            conversation disturbed by other work is held again as a new one). Medians per
            turn over the conversations; the ratio is turn {turns[-1]}'s median over turn
            {turns[0]}'s; the last median is over every turn of every conversation."""
        ),
        "",
        f"| contender | {' | '.join(f'turn {t} TTFT' for t in turns)} "
        f"| turn {turns[-1]} / turn {turns[0]} | all turns, median "
        "| answers as raw's | empty or failed |",
        "|---|" + "---|" * (len(turns) + 4),
    ]
    for name, c in f["contenders"].items():
        if "conversation_ttft_ms" not in c:
            continue
        cells = " | ".join(f"{c['conversation_ttft_ms'][t]} ms" for t in turns)
        ratio = c["conversation_ttft_last_to_first"]
        same = "yes" if c["conversation_same_answers_as_raw"] else "no"
        lines.append(
            f"| {name} | {cells} | {ratio} × | {c['conversation_ttft_median_ms']} ms | {same} "
            f"| {c['conversation_failed']} of {c['conversation_turns_measured']} |"
        )
    return lines


def target_lines(figures: dict[str, Any]) -> list[str]:
    f = figures
    t = figures["targets"]
    ours = figures["contenders"]["Sovereign /v1"]

    def verdict(name: str) -> str:
        return "**met**" if t[name]["met"] else "**not met**"

    def ratio(name: str) -> str:
        value = figures["contenders"][name].get("conversation_ttft_last_to_first")
        return "—" if value is None else f"{value:.2f} ×"

    turns = t["conversation_turn_10_to_turn_1"]["value"]
    return [
        "Targets for Sovereign:",
        "",
        f"- One stream, at least 0.95 × raw llama-cpp-python's tokens/s: "
        f"{t['one_stream_rate']['value']:.4f} × — {verdict('one_stream_rate')}.",
        f"- One stream's time to first token at most 20 ms above raw's: "
        f"{t['one_stream_ttft_above_raw_ms']['value']:+.1f} ms — "
        f"{verdict('one_stream_ttft_above_raw_ms')}.",
        f"- Conversation: turn 10's time to first token within 1.3 × turn 1's: "
        f"{'—' if turns is None else f'{turns:.2f} ×'} (llama_cpp.server: "
        f"{ratio('llama_cpp.server --interrupt_requests False')}, raw llama-cpp-python: "
        f"{ratio('raw llama-cpp-python')}) — {verdict('conversation_turn_10_to_turn_1')}.",
        f"- {f['streams']} streams, aggregate at least 0.9 × the ceiling of the engine's own "
        f"decode step measured in this run ({f['streams']} tokens a {f['streams']}-sequence "
        f"step, {f['decode_ceiling_tokens_per_second']} tok/s; below): "
        f"{t['many_aggregate_of_ceiling']['value']:.3f} × — "
        f"{verdict('many_aggregate_of_ceiling')}.",
        f"- No stream empty or failed: {t['many_empty_or_failed']['value']:.0f} — "
        f"{verdict('many_empty_or_failed')}.",
        f"- Slowest of {f['streams']} streams at least 0.3 × raw's single stream: "
        f"{t['many_slowest_rate']['value']:.3f} × — {verdict('many_slowest_rate')}.",
        f"- One copy of the weights: all the node's processes together map "
        f"{ours['weights_mapped_mb']} MB of the {figures['model_file_mb']} MB file "
        f"({ours['weights_resident_mb']} MB resident) — {verdict('one_copy_of_weights_mb')}.",
        f"- Peak engine memory at most file + KV cache + 200 MB = "
        f"{figures['model_file_mb']} + {figures['engine_kv_cache_mb']} + 200 = "
        f"{figures['engine_memory_bound_mb']} MB: {ours['peak_memory_mb']} MB — "
        f"{verdict('peak_memory_mb')}.",
    ]


def serving_lines(figures: dict[str, Any]) -> list[str]:
    f = figures
    contenders = f["contenders"]
    ours = contenders["Sovereign /v1"]["serving_cpu_ms_per_token"]
    theirs = contenders["llama_cpp.server --interrupt_requests False"]["serving_cpu_ms_per_token"]
    step = {int(size): ms for size, ms in f["decode_step_ms"].items()}[1]
    return paragraph(
        f"""Where one stream's rate goes: each token Sovereign sends crosses two processes
        that raw llama-cpp-python does not have: the engine writes it to the web server over
        a unix socket, and the web server sends it as a server-sent event. Per token of one
        stream, that serving path (the web server and the engine's socket thread) used
        {ours} ms of CPU, llama_cpp.server's event loop thread {theirs} ms, while a decode
        step takes {step} ms with llama.cpp's {f["threads"]} threads on {f["cores"]} cores:
        any CPU the serving path uses is taken from the decoding. (The client shares the
        cores too, and parses as little as it can.)"""
    ) + ["", *first_token_lines(figures)]


def first_token_lines(figures: dict[str, Any]) -> list[str]:
    parts = figures["first_token_parts_ms"]
    ours = figures["contenders"]["Sovereign /v1"]["one_stream_ttft_ms"]
    raw = figures["contenders"]["raw llama-cpp-python"]["one_stream_ttft_ms"]
    return paragraph(
        f"""Where one stream's first token goes: Sovereign's engine gives the first token of
        the bench's (cached) prompt over its own socket, with no web server, after
        {parts["engine_socket_ttft"]} ms (raw llama-cpp-python, in its own process:
        {raw} ms); through `/v1` it comes after {ours} ms. An HTTP request to the node that
        does nothing (a 404, before any database or engine work) takes
        {parts["empty_http_request"]} ms here: the difference is the web request, its
        authentication and the model's lookup, not the engine."""
    )


def step_lines(figures: dict[str, Any]) -> list[str]:
    f = figures
    steps = {int(size): ms for size, ms in figures["decode_step_ms"].items()}
    one = steps[1]
    cells = " | ".join(
        f"{ms} ms ({ms / one:.2f} ×, {size * 1000 / ms:.0f} tok/s)" for size, ms in steps.items()
    )
    per_sequence, fixed = statistics.linear_regression(list(steps), list(steps.values()))
    ceiling = f["streams"] * one / steps[f["streams"]]
    verdict = " (2.0 ×, the target once set, is out of reach here whatever serves them)"
    verdict = verdict if ceiling < 2.0 else ""
    return [
        *paragraph(
            """Why batching gains what it gains here: one engine step (one `llama_decode` plus
            sampling, `BatchedGenerator` with no HTTP) for 1, 2 and 4 sequences, median:"""
        ),
        "",
        "| 1 sequence | 2 sequences | 4 sequences |",
        "|---|---|---|",
        f"| {cells} |",
        "",
        *paragraph(
            f"""A step costs about {fixed:.1f} ms plus {per_sequence:.1f} ms per sequence
            (least squares). Only the fixed part is shared by the sequences of a batch: the
            step's own overhead and reading the weights, which takes about
            {figures["weights_read_ms"]} ms for the {figures["model_file_mb"]} MB file at the
            {figures["memory_read_gb_per_s"]} GB/s one thread reads here. The per-sequence
            part is arithmetic, which batching cannot share: this 135M model is small enough
            that the cores' arithmetic, not memory bandwidth, bounds a step. So {f["streams"]}
            streams can at best reach {ceiling:.2f} × one stream's rate on this machine,
            {f["decode_ceiling_tokens_per_second"]} tok/s, before any HTTP{verdict}: the
            ceiling Sovereign's {f["streams"]}-stream aggregate is measured against. Models
            bound by memory bandwidth (larger ones, on the same cores) gain far more from the
            same batching."""
        ),
        "",
        *paragraph(
            f"""The {f["streams"]}-stream rounds repeat the bench's prompt, after a warm-up of
            {f["streams"]} streams: each of Sovereign's slots holds it already (and
            llama_cpp.server's one cached sequence), so a round reads one token of prompt per
            stream and then decodes. That is on purpose: the ceiling leaves out the step
            that reads the prompt, so the fraction of it reached measures what serving
            {f["streams"]} streams costs on top of decoding them, like against like; with a
            new prompt each round it would also charge {f["streams"]} prompts' reading to
            the decoding. How fast a prompt is read is measured by the conversation's first
            turn."""
        ),
        "",
        *reading_lines(figures),
    ]


def reading_lines(figures: dict[str, Any]) -> list[str]:
    """What reproducible mode's small prompt chunks cost a new prompt."""
    rates = {
        int(chunk): rate for chunk, rate in figures["prompt_reading_tokens_per_second"].items()
    }
    default, (small, exact) = rates[0], max(rates.items())
    return paragraph(
        f"""Reading a long prompt (about 1,000 tokens, one sequence): {default} tok/s as the
        engine reads it by default, {exact} tok/s in reproducible mode
        (`SOVEREIGN_ENGINE_REPRODUCIBLE`), which reads at most {small} tokens of a sequence a
        step so that a token's cache cells are the same bit for bit however its prompt was
        split, and a greedy answer the same with or without the cache: {exact / default:.2f}
        × the speed, paid once per new prompt, since later turns read only what is new."""
    )
