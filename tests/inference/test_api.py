"""The OpenAI-compatible API against a running node: real web server, real engine, real model."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from nostr_sdk import Keys

from tests.instances import Instance, children, command_line, log_in, wait_for

pytestmark = pytest.mark.processes
MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# With this seed SmolLM2 tells a story of hundreds of tokens: it is still answering when a
# test cancels it or kills the engine under it, so no test leans on luck for the length.
STORY = [{"role": "user", "content": "Write a very long story about a dragon, in ten chapters."}]
LONG: dict[str, Any] = {"model": MODEL, "messages": STORY, "max_tokens": 2000,
                        "temperature": 1.0, "seed": 1}  # fmt: skip


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    instance = Instance(tmp_path_factory.mktemp("node"))
    instance.run("web", "engine")
    instance.wait_until("engine", "up", timeout=120)
    owner = Keys.generate()
    instance.claim(owner)
    created = instance.manage("apikey", "create", owner.public_key().to_bech32(), "--name", "tests")
    instance.api_key = created.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    instance.owner = owner  # type: ignore[attr-defined]
    yield instance
    instance.stop()


@pytest.fixture
def client(node: Instance) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{node.url}/v1", api_key=node.api_key, max_retries=0)  # type: ignore[attr-defined]


def test_the_models_are_listed(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [MODEL]


def test_a_whole_answer_names_the_file_that_gave_it(client: openai.OpenAI, node: Instance) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=24,
        temperature=0,  # type: ignore[arg-type]
    )

    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 24  # type: ignore[union-attr]
    extra = completion.model_extra or {}
    listed = node.manage("models", "list").stdout.split("\t")
    assert extra["sovereign"]["model_sha256"] == listed[-1].strip()
    assert extra["sovereign"]["sampling"]["temperature"] == 0
    assert isinstance(extra["sovereign"]["sampling"]["seed"], int)  # drawn, and recorded


def test_a_streamed_answer_arrives_in_chunks_and_ends(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=24, temperature=0, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_four_requests_at_once_are_answered_together(node: Instance) -> None:
    client = openai.OpenAI(base_url=f"{node.url}/v1", api_key=node.api_key, max_retries=0,  # type: ignore[attr-defined]
                           timeout=120)  # fmt: skip
    before = engine_status(node)["finished"].get("cancelled", 0)
    # Each stream opens once its request gives its first token: with one answered at a time,
    # the second would wait for the first's 2000 tokens.
    streams = [client.chat.completions.create(**{**LONG, "seed": seed}, stream=True)
               for seed in (1, 3, 4, 5)]  # fmt: skip
    firsts = [next(iter(stream)) for stream in streams]

    assert engine_status(node)["running"] == 4
    assert all(first.choices[0].delta.role == "assistant" for first in firsts)
    for stream in streams:
        stream.close()
    wait_for(lambda: engine_status(node)["running"] == 0, 60, "the engine to stop generating")
    assert engine_status(node)["finished"].get("cancelled", 0) == before + 4


def test_a_second_turn_reads_only_its_new_tokens_and_the_system_page_shows_the_slot(
    client: openai.OpenAI, node: Instance
) -> None:
    turn = [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "Name a river in Europe."}]  # fmt: skip
    first = client.chat.completions.create(model=MODEL, messages=turn, max_tokens=16,  # type: ignore[arg-type]
                                           temperature=0)  # fmt: skip
    answer = first.choices[0].message.content or ""
    turn += [{"role": "assistant", "content": answer},
             {"role": "user", "content": "How long is it?"}]  # fmt: skip
    second = client.chat.completions.create(model=MODEL, messages=turn, max_tokens=16,  # type: ignore[arg-type]
                                            temperature=0)  # fmt: skip

    assert first.usage is not None and second.usage is not None
    cached = second.usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    assert first.usage.prompt_tokens < cached < second.usage.prompt_tokens
    slots = engine_status(node)["slots"]
    assert len(slots) == 4 and not any(slot["busy"] for slot in slots)
    kept = max(slot["cached_tokens"] for slot in slots)
    assert kept >= second.usage.prompt_tokens

    cookie = log_in(node, node.owner)  # type: ignore[attr-defined]
    request = urllib.request.Request(f"{node.url}/system/", headers={"Cookie": cookie})
    page = urllib.request.urlopen(request, timeout=30).read().decode()
    assert f"<td>{kept}</td>" in page
    assert f'data-model="{MODEL}"' in page and "<td>8192 tokens</td>" in page


def test_an_unknown_model_is_404_in_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as refusal:
        client.chat.completions.create(model="gpt-9", messages=QUESTION)  # type: ignore[arg-type]
    assert refusal.value.code == "model_not_found"


def test_a_prompt_longer_than_the_context_is_400_saying_so(client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(openai.BadRequestError, match="context|too long|tokens") as refusal:
        client.chat.completions.create(model=MODEL, messages=long)  # type: ignore[arg-type]
    assert refusal.value.code == "context_length_exceeded"


def test_a_malformed_body_is_400_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refusal:
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=5)  # type: ignore[arg-type]
    assert refusal.value.param == "temperature"


def test_without_a_key_the_api_is_401(node: Instance) -> None:
    anonymous = openai.OpenAI(base_url=f"{node.url}/v1", api_key="sov_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()


def engine_pid(node: Instance) -> int:
    supervisor = node.processes[0].pid
    return next(p for p in children(supervisor) if command_line(p).endswith(b"engine\x00"))


def engine_status(node: Instance) -> dict[str, Any]:
    """What the engine says of itself over its socket: answers running, and ended by reason."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(10)
        connection.connect(str(node.data_dir / "engine.sock"))
        connection.sendall(b'{"op": "status"}\n')
        status: dict[str, Any] = json.loads(connection.makefile().readline())
        return status


def test_a_client_that_disconnects_stops_its_generation(
    client: openai.OpenAI, node: Instance
) -> None:
    before = engine_status(node)["finished"]
    stream = client.chat.completions.create(**LONG, stream=True)
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    assert engine_status(node)["running"] == 1

    stream.close()

    wait_for(lambda: engine_status(node)["running"] == 0, 60, "the engine to stop generating")
    after = engine_status(node)["finished"]
    assert after.get("cancelled", 0) == before.get("cancelled", 0) + 1  # not ended by itself
    assert after.get("length", 0) == before.get("length", 0)
    assert after.get("stop", 0) == before.get("stop", 0)


def test_killing_the_engine_mid_answer_fails_that_answer_clearly_then_recovers(
    client: openai.OpenAI, node: Instance
) -> None:
    stream = client.chat.completions.create(**LONG, stream=True)
    next(iter(stream))
    os.kill(engine_pid(node), signal.SIGKILL)

    with pytest.raises(openai.APIError, match="engine stopped"):
        for _chunk in stream:
            pass

    node.wait_until("engine", "up", timeout=60)
    answer = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    assert answer.choices[0].message.content


def test_killing_the_engine_under_a_whole_answer_is_503_engine_stopped(
    client: openai.OpenAI, node: Instance
) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        whole = pool.submit(client.chat.completions.create, **LONG)
        wait_for(lambda: engine_status(node)["running"] == 1, 60, "the answer to start")
        os.kill(engine_pid(node), signal.SIGKILL)

        with pytest.raises(openai.InternalServerError) as refusal:
            whole.result(timeout=60)

    assert refusal.value.status_code == 503
    assert refusal.value.code == "engine_stopped"
    assert refusal.value.response.headers["Content-Type"] == "application/json"
    node.wait_until("engine", "up", timeout=60)


def test_beyond_the_queue_the_api_answers_429_with_retry_after(make_instance: Any) -> None:
    small = make_instance(SOVEREIGN_ENGINE_SLOTS="1", SOVEREIGN_ENGINE_QUEUE="0")
    small.run("web", "engine")
    small.wait_until("engine", "up", timeout=120)
    owner = Keys.generate()
    small.claim(owner)
    key = small.manage(
        "apikey", "create", owner.public_key().to_bech32(), "--name", "t"
    ).stdout.split()[-1]
    client = openai.OpenAI(base_url=f"{small.url}/v1", api_key=key, max_retries=0)
    busy = client.chat.completions.create(**LONG, stream=True)
    next(iter(busy))
    assert engine_status(small)["running"] == 1

    with pytest.raises(openai.RateLimitError) as refusal:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)  # type: ignore[arg-type]

    assert refusal.value.response.headers["Retry-After"] == "2"
    assert refusal.value.code == "overloaded"
    busy.close()


def call(node: Instance, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """A raw request with the node's key: the status and the JSON body (which it must be)."""
    request = urllib.request.Request(f"{node.url}{path}", data=body or None, method=method)
    request.add_header("Authorization", f"Bearer {node.api_key}")  # type: ignore[attr-defined]
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, content_type, raw = (
                response.status,
                response.headers["Content-Type"],
                response.read(),
            )
    except urllib.error.HTTPError as error:
        status, content_type, raw = error.code, error.headers["Content-Type"], error.read()
    assert content_type == "application/json", (status, raw[:200])
    return status, json.loads(raw)


def ask(**fields: Any) -> bytes:
    return json.dumps({"model": MODEL, "messages": QUESTION, **fields}).encode()


ERRORS = [
    ("POST", "/v1/chat/completions", b"x" * 5_000_000, 400, "request_too_large", None),
    ("POST", "/v1/chat/completions", b"[" * 50_000 + b"]" * 50_000, 400, None, None),
    ("GET", "/v1/unknown", b"", 404, "unknown_url", None),
    ("GET", "/v1/models/", b"", 404, "unknown_url", None),
    ("POST", "/v1/models", b"{}", 405, "method_not_allowed", None),
    ("GET", "/v1/chat/completions", b"", 405, "method_not_allowed", None),
    ("POST", "/v1/chat/completions", ask(n=3), 400, "unsupported_parameter", "n"),
    ("POST", "/v1/chat/completions", ask(tools=[{"type": "function", "function": {"name": "f"}}]),
     400, "unsupported_parameter", "tools"),
    ("POST", "/v1/chat/completions", ask(logit_bias={"1": 5}), 400, "unsupported_parameter",
     "logit_bias"),
    ("POST", "/v1/chat/completions", ask(frobnicate=True), 400, "unsupported_parameter",
     "frobnicate"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "param"), ERRORS)
def test_every_v1_error_is_in_openais_shape(
    node: Instance, method: str, path: str, body: bytes, status: int, code: str | None,
    param: str | None,
) -> None:  # fmt: skip
    answered, payload = call(node, method, path, body)

    assert answered == status
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["message"] and payload["error"]["type"] == "invalid_request_error"
    assert (payload["error"]["code"], payload["error"]["param"]) == (code, param)
    assert "Traceback" not in node.logs()


def test_fields_that_change_nothing_are_accepted(node: Instance) -> None:
    body = ask(n=1, tools=[], user="someone", presence_penalty=0, max_tokens=2)

    status, payload = call(node, "POST", "/v1/chat/completions", body)

    assert status == 200 and payload["choices"][0]["message"]["content"] is not None


BOX = "\u2500" * 8  # one token of SmolLM2's: 24 bytes of UTF-8, 48 as escaped JSON


def test_a_prompt_over_64_kib_that_fits_the_context_is_answered(node: Instance) -> None:
    fits = [{"role": "user", "content": BOX * 1500}]  # 1500 of the context's 2048 tokens
    body = ask(messages=fits, max_tokens=1)
    assert len(body) > 64 * 1024  # once refused as "Malformed request." by the engine's socket

    status, payload = call(node, "POST", "/v1/chat/completions", body)

    assert status == 200, payload
    assert 1500 <= payload["usage"]["prompt_tokens"] < 2048


def test_a_request_over_the_size_limit_is_400_naming_it(node: Instance) -> None:
    over = [{"role": "user", "content": BOX * 4200}]  # 2048 * 64 bytes + 64 KiB is the limit

    status, payload = call(node, "POST", "/v1/chat/completions", ask(messages=over))

    assert status == 400
    assert payload["error"]["code"] == "request_too_large"
    assert "at most 196608 bytes" in payload["error"]["message"]
    assert "2048 tokens (SOVEREIGN_ENGINE_CONTEXT)" in payload["error"]["message"]


@pytest.mark.parametrize("characters", [300_000, 3_000_000])  # the second over Django's cap
def test_a_chunked_request_over_the_size_limit_is_400_naming_it(
    node: Instance, characters: int
) -> None:
    body = ask(messages=[{"role": "user", "content": "x" * characters}])
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=120)
    headers = {"Authorization": f"Bearer {node.api_key}", "Content-Type": "application/json"}  # type: ignore[attr-defined]
    chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))

    connection.request("POST", "/v1/chat/completions", chunks, headers, encode_chunked=True)
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()

    assert response.status == 400
    assert payload["error"]["code"] == "request_too_large"


def test_the_size_limit_follows_the_configured_context(make_instance: Any) -> None:
    wide = make_instance(SOVEREIGN_ENGINE_CONTEXT="65536")
    code = ("from django.conf import settings as s;"
            "print(s.ENGINE_REQUEST_BYTES, s.DATA_UPLOAD_MAX_MEMORY_SIZE)")  # fmt: skip

    printed = wide.manage("shell", "-c", code)
    limit, django_limit = map(int, printed.stdout.split()[-2:])

    assert limit == 65536 * 64 + 64 * 1024
    assert django_limit >= limit  # Django's own check must not refuse first, in HTML
