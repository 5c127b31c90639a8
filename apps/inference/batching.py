"""The decoding core of the local engine: continuous batching over llama.cpp's low-level API.

One model and one context (one copy of the weights, one KV cache) serve `slots` sequences at
once, the way llama.cpp's own server does it:

* every sequence owns a seq_id in the KV cache, in its own stream (`kv_unified = False`), so
  the per-sequence context is `context_per_slot` and sequences never attend to each other;
* each `step()` is one `llama_decode` of a single `llama_batch` holding the next token of every
  generating sequence plus a chunk of the prompt of every newly admitted one, so a long prompt
  is spread over several steps and never stalls the others for more than one chunk;
* each sequence has its own sampler chain (temperature, top-p, seed, GBNF grammar);
* requests wait in a FIFO queue when all slots are busy and are admitted in arrival order;
* a slot keeps the KV cache of the last sequence it served: a new request goes to the free
  slot whose cached tokens share the longest prefix with its prompt and decodes only the rest,
  so the next turn of a conversation reads only what is new. Only an exact token prefix is
  ever reused, and the cache is never read out: it only spares llama.cpp work;
* output bytes go through an incremental UTF-8 decoder (a character split across tokens is
  held back, not replaced), and stop strings are held back until they are ruled out, so the
  text never contains a stop string, even one split across tokens.

No Django here: the caller (the engine's worker thread) owns a `BatchedGenerator`, calls
`add()`/`cancel()` from anywhere (the methods are serialised by a lock) and drives `step()` in
a loop while `busy` is true.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import llama_cpp.llama_cpp as llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from sovereign import llama_cpu

FinishReason = Literal["stop", "length", "cancelled", "error"]

DEFAULT_BATCH_SIZE = 256  # tokens per llama_decode: the prompt chunk budget plus one per stream
# The prompt chunk of reproducible mode. llama.cpp's CPU kernels compute a token's cells bit
# for bit the same whether it is read alone or with up to 63 others of its sequence, and with
# faster kernels, which round differently, from 64 on. Read at most 63 at a time, a prompt's
# cells are the same however it was split (in one piece, or partly in an earlier turn and
# partly now, answers included), so a greedy answer is the same with or without the cache and
# whatever else the engine is doing; a new prompt takes more steps to read (bench/inference.py).
REPRODUCIBLE_PROMPT_CHUNK = 63

_backend_lock = threading.Lock()
_backend_ready = False


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.8  # 0 means greedy
    top_p: float = 0.95
    seed: int | None = None  # same seed + same prompt + same params -> same text
    stop: tuple[str, ...] = ()  # the text stops before the first of these
    grammar: str | None = None  # GBNF text constraining the output; its start rule is `root`

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, not {self.max_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must not be negative, not {self.temperature}.")
        if not 0 <= self.top_p <= 1:  # 0 keeps only the likeliest token: greedy
            raise ValueError(f"top_p must be from 0 to 1, not {self.top_p}.")


@dataclass(frozen=True)
class TokenEvent:
    request_id: str
    text: str  # new text for this step ("" while a stop string or a UTF-8 sequence is pending)
    finished: bool = False
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of the prompt's tokens, how many were already in the slot's cache


@dataclass(frozen=True)
class SlotState:
    seq_id: int
    busy: bool
    cached_tokens: int  # tokens whose KV cells the slot holds (for its next request to reuse)


@dataclass(eq=False)
class _Slot:
    """One seq_id of the KV cache and the tokens its cells hold, position by position."""

    seq_id: int
    cached: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: int = -1  # when a sequence last started here (a counter); -1: never
    cache_group: str = ""  # whose prompt the cached tokens came from (see BatchedGenerator.add)


class PromptTooLong(ValueError):
    """The prompt does not fit the per-sequence context; the message gives both sizes."""


@dataclass(eq=False)
class _Sequence:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    sampler: Any  # llama_sampler_p: the sequence's own chain, freed when the sequence ends
    cache_group: str = ""
    slot: _Slot | None = None
    n_past: int = 0  # tokens of this sequence in the KV cache (= position of the next one)
    cached_tokens: int = 0  # prompt tokens found in the slot's cache, not decoded again
    pending: int | None = None  # sampled token not yet decoded
    completion_tokens: int = 0
    held: str = ""  # text held back because it may be the start of a stop string
    output_index: int = -1  # where this sequence's logits are in the current batch
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    @property
    def seq_id(self) -> int:
        assert self.slot is not None, "only an admitted sequence has a seq_id"
        return self.slot.seq_id


class BatchedGenerator:
    """Continuous batching of up to `slots` sequences on one model and one context."""

    def __init__(
        self,
        model_path: str,
        *,
        slots: int = 4,
        context_per_slot: int = 2048,
        threads: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        prompt_chunk: int | None = None,  # most prompt tokens of a sequence a step; None: any
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}.")
        if slots > llama.llama_max_parallel_sequences():
            raise ValueError(
                f"slots must be at most {llama.llama_max_parallel_sequences()}, not {slots}."
            )
        if context_per_slot < 8:
            raise ValueError(f"context_per_slot must be at least 8, not {context_per_slot}.")
        if batch_size <= slots:
            raise ValueError(f"batch_size must exceed slots ({slots}), not {batch_size}.")
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"No model file at {model_path}.")

        self.slots = slots
        self.context_per_slot = context_per_slot
        self.batch_size = batch_size
        self.prompt_chunk = prompt_chunk or batch_size
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}.")
        # All the cores, for one token as for a batch; the engine then follows the cores other
        # processes leave idle with set_threads (cpu_share.py, bench/threads.py).
        n_threads = n_threads_batch = threads or os.cpu_count() or 1

        self._lock = threading.RLock()
        self._closed = False
        self._model: Any = None
        self._ctx: Any = None
        self._batch: llama.llama_batch | None = None
        self._queue: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []  # in admission order
        self._slots = [_Slot(seq_id) for seq_id in range(slots)]
        self._starts = 0  # sequences started, to tell which slot was used least recently
        self._pending_events: list[TokenEvent] = []
        self._formatter: Jinja2ChatFormatter | None = None

        _quiet_llama_logs()
        _init_backend()
        try:
            model_params = llama.llama_model_default_params()
            self._model = llama.llama_model_load_from_file(model_path.encode(), model_params)
            if not self._model:
                raise ValueError(f"llama.cpp could not load the model at {model_path}.")
            self._vocab = llama.llama_model_get_vocab(self._model)
            if not self._vocab:
                raise ValueError(f"The model at {model_path} has no vocabulary.")
            self._n_vocab = llama.llama_vocab_n_tokens(self._vocab)

            params = llama.llama_context_default_params()
            params.n_ctx = slots * context_per_slot
            params.n_seq_max = slots
            params.n_batch = batch_size
            params.n_ubatch = batch_size
            params.n_threads = n_threads
            params.n_threads_batch = n_threads_batch
            # One KV stream per sequence: each gets n_ctx / n_seq_max cells of its own, and
            # attention never looks at (or pays for) another sequence's cells.
            params.kv_unified = False
            params.no_perf = True
            self._ctx = llama.llama_init_from_model(self._model, params)
            if not self._ctx:
                raise ValueError("llama.cpp could not create a context for the model.")
            self._memory = llama.llama_get_memory(self._ctx)
            if llama.llama_n_ctx_seq(self._ctx) < context_per_slot:
                raise ValueError(
                    f"llama.cpp gave {llama.llama_n_ctx_seq(self._ctx)} tokens of context "
                    f"per sequence, fewer than the {context_per_slot} asked for."
                )
            # One seq_id per token: each token of the batch belongs to exactly one sequence.
            self._batch = llama.llama_batch_init(batch_size, 0, 1)
        except BaseException:
            self.close()
            raise

    # -- public API ------------------------------------------------------------------------

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        """Text to tokens with the model's tokenizer (BOS added if the model wants one)."""
        with self._lock:
            self._check_open()
            return self._tokenize(text.encode(), add_special, parse_special)

    def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Render `messages` with the model's own chat template (plus the generation prompt)
        and tokenize the result, special tokens included."""
        with self._lock:
            self._check_open()
            prompt = self._render_chat(messages)
            bos_text = self._special_text(llama.llama_vocab_bos(self._vocab))
            add_bos = llama.llama_vocab_get_add_bos(self._vocab) and not (
                bos_text and prompt.startswith(bos_text)
            )
            return self._tokenize(prompt.encode(), add_bos, True)

    def add(
        self,
        request_id: str,
        prompt_tokens: list[int],
        params: SamplingParams,
        cache_group: str = "",
    ) -> None:
        """Queue a request; it starts at the next `step()` that finds a free slot. It reuses a
        slot's cached prefix only if that slot last served the same `cache_group`: how many
        tokens were found cached (and how fast the answer came) would otherwise tell one group
        what another asked."""
        with self._lock:
            self._check_open()
            if any(seq.request_id == request_id for seq in (*self._queue, *self._active)):
                raise ValueError(f"A request with id {request_id!r} is already running.")
            if not prompt_tokens:
                raise ValueError("The prompt has no tokens.")
            if len(prompt_tokens) >= self.context_per_slot:
                raise PromptTooLong(
                    f"The prompt is {len(prompt_tokens)} tokens, but the context per sequence "
                    f"is {self.context_per_slot} tokens (and must leave room for at least one "
                    "generated token)."
                )
            bad = next((t for t in prompt_tokens if not 0 <= t < self._n_vocab), None)
            if bad is not None:
                raise ValueError(f"Token {bad} is not in the model's vocabulary.")
            sampler = self._make_sampler(params)
            self._queue.append(
                _Sequence(request_id, list(prompt_tokens), params, sampler, cache_group)
            )

    def cancel(self, request_id: str) -> None:
        """Stop a request: its slot (and KV cells) are freed now, and the next `step()` returns
        its final event with finish_reason "cancelled". Unknown or finished ids are ignored."""
        with self._lock:
            if self._closed:
                return
            for seq in self._queue:
                if seq.request_id == request_id:
                    self._queue.remove(seq)
                    self._pending_events.append(self._end(seq, "cancelled", ""))
                    return
            for seq in self._active:
                if seq.request_id == request_id:
                    self._pending_events.append(self._end(seq, "cancelled", ""))
                    return

    def step(self) -> list[TokenEvent]:
        """One llama_decode for all active sequences; returns this step's events.

        A generating sequence yields one event per step. A sequence still reading its
        prompt yields nothing until the step that reads the prompt's last token (which
        also samples the first completion token). [] when idle."""
        with self._lock:
            self._check_open()
            events, self._pending_events = self._pending_events, []
            self._admit()
            if not self._active:
                return events
            in_batch = self._fill_batch()
            assert self._batch is not None
            try:
                result = llama.llama_decode(self._ctx, self._batch)
                if result == 0:
                    events.extend(self._sample(s) for s in in_batch if s.output_index >= 0)
                    return events
            except BaseException:
                self._forget(in_batch)
                raise
            # 1: no KV room, 2: aborted, <0: invalid batch or fatal. Whatever part was decoded
            # is dropped with the sequences and their slots' caches.
            self._forget(in_batch)
            events.extend(self._end(seq, "error", "") for seq in in_batch)
            return events

    def slot_states(self) -> list[SlotState]:
        """Each slot: whether a sequence runs in it, and how many tokens its cache holds."""
        with self._lock:
            return [SlotState(s.seq_id, s.busy, len(s.cached)) for s in self._slots]

    @property
    def busy(self) -> bool:
        """True while anything is queued, running, or has an event still to report."""
        with self._lock:
            return bool(self._queue or self._active or self._pending_events)

    @property
    def thread_counts(self) -> tuple[int, int]:
        """The CPU threads llama.cpp uses: for a single token, and for a batch of several."""
        with self._lock:
            self._check_open()
            return llama.llama_n_threads(self._ctx), llama.llama_n_threads_batch(self._ctx)

    @property
    def n_active(self) -> int:
        with self._lock:
            return len(self._active)

    @property
    def n_queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def close(self) -> None:
        """Free the samplers, the batch, the context (KV cache) and the model. Idempotent."""
        with self._lock:
            self._closed = True
            for seq in (*self._queue, *self._active):
                if seq.sampler:
                    llama.llama_sampler_free(seq.sampler)
                    seq.sampler = None
            self._queue.clear()
            self._active.clear()
            self._pending_events.clear()
            if self._batch is not None:
                llama.llama_batch_free(self._batch)
                self._batch = None
            if self._ctx:
                llama.llama_free(self._ctx)
                self._ctx = None
            if self._model:
                llama.llama_model_free(self._model)
                self._model = None

    def __enter__(self) -> BatchedGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter shutdown ctypes or the bindings may already be torn down.
        with contextlib.suppress(Exception):
            self.close()

    def set_threads(self, single: int, batch: int) -> None:
        """The CPU threads llama.cpp uses from the next `step()` on: for a single token, and
        for a batch of several."""
        if single < 1 or batch < 1:
            raise ValueError(f"Thread counts must be at least 1, not {single} and {batch}.")
        with self._lock:
            self._check_open()
            llama.llama_set_n_threads(self._ctx, single, batch)

    # -- scheduling ------------------------------------------------------------------------

    def _admit(self) -> None:
        while self._queue and any(not slot.busy for slot in self._slots):
            seq = self._queue.popleft()
            slot = self._slot_for(seq.prompt, seq.cache_group)
            # At least the prompt's last token is decoded again: its logits give the first
            # answer token.
            shared = _common_prefix(slot.cached, seq.prompt)
            reuse = min(shared, len(seq.prompt) - 1) if slot.cache_group == seq.cache_group else 0
            if not llama.llama_memory_seq_rm(self._memory, slot.seq_id, reuse, -1):
                reuse = 0  # a memory that cannot drop a tail (recurrent models) starts over
                llama.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            del slot.cached[reuse:]
            slot.busy, slot.last_used, slot.cache_group = True, self._starts, seq.cache_group
            self._starts += 1
            seq.slot, seq.n_past, seq.cached_tokens = slot, reuse, reuse
            self._active.append(seq)

    def _slot_for(self, prompt: list[int], cache_group: str) -> _Slot:
        """The free slot whose cache shares the longest prefix with `prompt`; a slot counts as
        sharing only when that prefix is at least half of what it holds (else taking it would
        throw away more than it spares). Otherwise an empty slot, else the least recently used:
        each keeps whatever prefix it shares.

        The prefix is of tokens, not text: two members with the same system prompt share
        exactly those tokens' cells, which hold nothing of either one's own messages. Only a
        slot of the same cache group counts as sharing."""

        def worth(slot: _Slot) -> tuple[int, bool, int]:
            same = slot.cache_group == cache_group
            shared = _common_prefix(slot.cached, prompt) if same else 0
            useful = shared if shared and 2 * shared >= len(slot.cached) else 0
            return useful, not slot.cached, -slot.last_used

        return max((slot for slot in self._slots if not slot.busy), key=worth)

    def _fill_batch(self) -> list[_Sequence]:
        """Put every generating sequence's pending token, and prompt chunks, in the batch.

        Tokens go in seq_id order: with one KV stream per sequence, llama.cpp splits a batch
        into ubatches of consecutive seq_ids (`split_equal(..., sequential=true)`), so any
        other order costs extra ubatches, i.e. extra passes over the weights."""
        batch = self._batch
        assert batch is not None
        reading = [seq for seq in self._active if seq.pending is None]  # admission order
        budget = self.batch_size - (len(self._active) - len(reading))
        # Prompt budget: an equal share for each sequence still reading its prompt, then what
        # is left over to the earliest admitted.
        share: dict[int, int] = {}
        if reading:
            fair = max(1, budget // len(reading))
            for seq in reading:
                left = min(len(seq.prompt) - seq.n_past, self.prompt_chunk)
                share[seq.seq_id] = min(fair, left, budget)
                budget -= share[seq.seq_id]
            for seq in reading:
                left = min(len(seq.prompt) - seq.n_past, self.prompt_chunk) - share[seq.seq_id]
                extra = min(budget, left)
                share[seq.seq_id] += extra
                budget -= extra

        n = 0
        in_batch: list[_Sequence] = []
        positions: Any = batch.pos  # the bindings mis-annotate it as an array of arrays

        def put(seq: _Sequence, token: int, output: bool) -> None:
            nonlocal n
            batch.token[n] = token
            positions[n] = seq.n_past
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq.seq_id
            batch.logits[n] = output
            if output:
                seq.output_index = n
            seq.n_past += 1
            n += 1
            # Written down before the decode: a failed decode empties the slot (see step).
            assert seq.slot is not None
            seq.slot.cached.append(token)

        for seq in sorted(self._active, key=lambda s: s.seq_id):
            seq.output_index = -1
            if seq.pending is not None:
                put(seq, seq.pending, True)
                seq.pending = None
            elif share.get(seq.seq_id, 0) > 0:
                start = seq.n_past
                for token in seq.prompt[start : start + share[seq.seq_id]]:
                    put(seq, token, seq.n_past == len(seq.prompt) - 1)
            else:
                continue
            in_batch.append(seq)
        batch.n_tokens = n
        return in_batch

    def _sample(self, seq: _Sequence) -> TokenEvent:
        token = llama.llama_sampler_sample(seq.sampler, self._ctx, seq.output_index)
        if _is_eog(self._vocab, token):
            return self._end(seq, "stop", seq.held)
        seq.completion_tokens += 1
        text = seq.held + seq.decoder.decode(self._piece(token))
        seq.held = ""
        stops = [s for s in seq.params.stop if s]
        if stops:
            cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                return self._end(seq, "stop", text[:cut])
            keep = _pending_stop_prefix(text, stops)
            if keep:
                text, seq.held = text[:-keep], text[-keep:]
        if seq.completion_tokens >= seq.params.max_tokens or seq.n_past >= self.context_per_slot:
            return self._end(seq, "length", text + seq.held)
        seq.pending = token
        return TokenEvent(
            seq.request_id,
            text,
            prompt_tokens=len(seq.prompt),
            completion_tokens=seq.completion_tokens,
        )

    def _end(self, seq: _Sequence, reason: FinishReason, text: str) -> TokenEvent:
        """Release the sequence's slot, KV cells and sampler; its final event."""
        if seq in self._active:
            # The slot keeps its cells, for the next request sharing their prefix: they hold
            # exactly the tokens decoded (a sampled token not yet decoded is not among them).
            self._active.remove(seq)
            assert seq.slot is not None
            seq.slot.busy = False
        if seq.sampler:
            llama.llama_sampler_free(seq.sampler)
            seq.sampler = None
        return TokenEvent(
            seq.request_id,
            text,
            finished=True,
            finish_reason=reason,
            prompt_tokens=len(seq.prompt),
            completion_tokens=seq.completion_tokens,
            cached_tokens=seq.cached_tokens,
        )

    def _forget(self, sequences: list[_Sequence]) -> None:
        """Empty the slots of a batch whose decode failed: their cells may be half written."""
        for seq in sequences:
            assert seq.slot is not None
            llama.llama_memory_seq_rm(self._memory, seq.seq_id, -1, -1)
            seq.slot.cached.clear()

    # -- llama.cpp helpers -----------------------------------------------------------------

    def _make_sampler(self, params: SamplingParams) -> Any:
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        if params.grammar is not None:
            grammar = llama.llama_sampler_init_grammar(
                self._vocab, params.grammar.encode(), b"root"
            )
            if not grammar:
                llama.llama_sampler_free(chain)
                raise ValueError("The grammar does not parse as GBNF with a `root` rule.")
            llama.llama_sampler_chain_add(chain, grammar)
        if params.temperature <= 0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
            return chain
        if params.top_p < 1:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_p(params.top_p, 1))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(params.temperature))
        seed = llama.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        if params.seed is not None and seed == llama.LLAMA_DEFAULT_SEED:
            seed -= 1  # 0xFFFFFFFF means "random" to llama.cpp; an explicit seed must not
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(seed))
        return chain

    def _tokenize(self, data: bytes, add_special: bool, parse_special: bool) -> list[int]:
        size = len(data) + 8
        for _ in range(2):
            tokens = (llama.llama_token * size)()
            n = llama.llama_tokenize(
                self._vocab, data, len(data), tokens, size, add_special, parse_special
            )
            if n >= 0:
                return list(tokens[:n])
            size = -n
        raise RuntimeError("llama.cpp could not tokenize the text.")

    def _piece(self, token: int, special: bool = False) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = llama.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama.llama_token_to_piece(self._vocab, token, buffer, -n, 0, special)
        return buffer.raw[: max(n, 0)]

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    def _render_chat(self, messages: list[dict[str, str]]) -> str:
        if self._formatter is None:
            template = llama.llama_model_chat_template(self._model, None)
            if template is None:
                return self._builtin_chatml(messages)
            self._formatter = Jinja2ChatFormatter(
                template=template.decode("utf-8"),
                eos_token=self._special_text(llama.llama_vocab_eos(self._vocab)),
                bos_token=self._special_text(llama.llama_vocab_bos(self._vocab)),
                add_generation_prompt=True,
            )
        return self._formatter(messages=cast(Any, messages)).prompt

    def _builtin_chatml(self, messages: list[dict[str, str]]) -> str:
        """No template in the GGUF: llama.cpp's built-in ChatML, as llama-server falls back to."""
        chat = (llama.llama_chat_message * len(messages))()
        keep: list[bytes] = []  # the encoded strings must outlive the call
        for i, message in enumerate(messages):
            role, content = message["role"].encode(), message["content"].encode()
            keep.extend((role, content))
            chat[i].role, chat[i].content = role, content
        size = 2 * sum(len(s) for s in keep) + 256
        buffer = ctypes.create_string_buffer(size)
        n = llama.llama_chat_apply_template(b"chatml", chat, len(messages), True, buffer, size)
        if n > size:
            buffer = ctypes.create_string_buffer(n)
            n = llama.llama_chat_apply_template(b"chatml", chat, len(messages), True, buffer, n)
        if n < 0:
            raise ValueError("llama.cpp could not apply the ChatML template.")
        return buffer.raw[:n].decode("utf-8")

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("This BatchedGenerator is closed.")


def _common_prefix(first: list[int], second: list[int]) -> int:
    n = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        n += 1
    return n


def _pending_stop_prefix(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that some stop string starts with."""
    for k in range(min(len(text), max(len(s) for s in stops) - 1), 0, -1):
        tail = text[-k:]
        if any(s.startswith(tail) for s in stops):
            return k
    return 0


def _is_eog(vocab: Any, token: int) -> bool:
    # llama_vocab_is_eog replaced llama_token_is_eog (which took the model, then the vocab).
    if hasattr(llama, "llama_vocab_is_eog"):
        return bool(llama.llama_vocab_is_eog(vocab, token))
    return bool(llama.llama_token_is_eog(vocab, token))


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_cpu.load()  # a portable build's CPU library for this processor, logged
            llama.llama_backend_init()
            _backend_ready = True


def _quiet_llama_logs() -> None:
    # llama_cpp routes llama.cpp's log through this logger and prints every line while it is
    # unconfigured (what Llama(verbose=False) also changes); keep errors only, unless the
    # application set a level itself.
    logger = logging.getLogger("llama-cpp-python")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.ERROR)
