"""The OpenAI-compatible API against a running node: real web server, real engine, real model."""

from __future__ import annotations

import concurrent.futures
import os
import signal
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from nostr_sdk import Keys

from tests.instances import Instance, children, command_line, wait_for

pytestmark = pytest.mark.processes
MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    instance = Instance(tmp_path_factory.mktemp("node"))
    instance.run("web", "engine")
    instance.wait_until("engine", "up", timeout=120)
    owner = Keys.generate()
    instance.claim(owner)
    created = instance.manage("apikey", "create", owner.public_key().to_bech32(), "--name", "tests")
    instance.api_key = created.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
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


def test_four_requests_at_once_all_complete(client: openai.OpenAI) -> None:
    prompts = ["Name a colour.", "Name a fruit.", "Name an animal.", "Name a country."]

    def ask(prompt: str) -> str:
        answer = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=16,  # type: ignore[list-item]
        )
        return answer.choices[0].message.content or ""

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, prompts))

    assert all(answer.strip() for answer in answers), answers


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


def running(node: Instance) -> int:
    detail = node.component("engine")["detail"]  # type: ignore[index]
    return int(detail.split("; ")[1].split(" ")[0])


def test_a_client_that_disconnects_stops_its_generation(
    client: openai.OpenAI, node: Instance
) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=2000,
        temperature=1.0,
        stream=True,  # type: ignore[arg-type]
    )
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    assert running(node) == 1

    stream.close()

    wait_for(lambda: running(node) == 0, 5, "the engine to stop generating")


def test_killing_the_engine_mid_answer_fails_that_answer_clearly_then_recovers(
    client: openai.OpenAI, node: Instance
) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=2000,
        temperature=1.0,
        stream=True,  # type: ignore[arg-type]
    )
    next(iter(stream))
    os.kill(engine_pid(node), signal.SIGKILL)

    with pytest.raises(openai.APIError, match="engine stopped"):
        for _chunk in stream:
            pass

    node.wait_until("engine", "up", timeout=60)
    answer = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    assert answer.choices[0].message.content


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
    busy = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=2000,
        temperature=1.0,
        stream=True,  # type: ignore[arg-type]
    )
    next(iter(busy))

    with pytest.raises(openai.RateLimitError) as refusal:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)  # type: ignore[arg-type]

    assert refusal.value.response.headers["Retry-After"] == "2"
    assert refusal.value.code == "overloaded"
    busy.close()
