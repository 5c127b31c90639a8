"""The engine checks llama.cpp before taking requests, and a llama.cpp that crashes turns it off
with one sentence instead of a crash loop."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
from nostr_sdk import Keys

from apps.inference.batching import SamplingParams
from apps.inference.engine import Decoder, Job
from apps.inference.self_check import SelfCheck, check_llama
from apps.inference.services import bundled_model_file
from tests.instances import Instance, children, wait_for

DIES_OF_SIGILL = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
QUESTION = [{"role": "user", "content": "Hello?"}]
# Loaded before anything else by every Python of the node: llama.cpp's decode dies as an AMX
# instruction does on a processor that refuses it, in whichever process calls it.
BROKEN_DECODE = """
import importlib.abc, os, signal, sys

def _sigill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGILL)

class _BreakDecode(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "llama_cpp.llama_cpp":
            return None
        others = (finder for finder in sys.meta_path if finder is not self)
        spec = next(filter(None, (f.find_spec(name, path, target) for f in others)), None)
        if spec is not None:
            load = spec.loader.exec_module
            def exec_module(module):
                load(module)
                module.llama_decode = _sigill
            spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _BreakDecode())
"""


def test_the_real_llama_cpp_passes_its_check_on_this_machine() -> None:
    assert check_llama(bundled_model_file(), 2) == SelfCheck("passed")


def test_a_check_killed_by_an_illegal_instruction_says_what_happened_and_how_to_rebuild() -> None:
    result = check_llama(bundled_model_file(), 2, program=DIES_OF_SIGILL)

    assert result.outcome == "broken"
    assert "illegal instruction (SIGILL)" in result.message
    assert "make rebuild-llama" in result.message


def test_a_check_that_cannot_run_does_not_turn_the_engine_off() -> None:
    fails = [sys.executable, "-c", "import sys; sys.exit('no such file')"]

    assert check_llama(bundled_model_file(), 2, program=fails) == SelfCheck(
        "unknown", "The check could not run: no such file"
    )
    assert check_llama(None, 2).outcome == "unknown"


def test_a_broken_llama_cpp_refuses_every_request_and_the_engine_stays_up() -> None:
    model = str(bundled_model_file())
    broken = check_llama(Path(model), 2, program=DIES_OF_SIGILL)
    decoder = Decoder(
        slots=1, context_per_slot=256, max_waiting=4, idle_unload=60, self_check=lambda: broken
    )
    thread = threading.Thread(target=decoder.run_forever, daemon=True)

    async def ask(request_id: str) -> dict[str, object]:
        job = Job(
            request_id, model, QUESTION, SamplingParams(max_tokens=4), asyncio.get_running_loop()
        )
        assert decoder.submit(job)
        return await asyncio.wait_for(job.events.get(), timeout=30)  # type: ignore[return-value]

    async def scenario() -> list[dict[str, object]]:
        waiting = asyncio.ensure_future(ask("before-the-check"))
        await asyncio.sleep(0.05)  # queued while the check runs
        thread.start()
        return [await waiting, await ask("after-the-check")]

    try:
        answers = asyncio.run(scenario())
        status = decoder.status()
    finally:
        decoder.stop()
        thread.join(timeout=30)

    assert [a["code"] for a in answers] == ["engine_broken", "engine_broken"]
    assert all(a["message"] == broken.message for a in answers)
    assert status["broken"] == broken.message and status["loaded"] is None


@pytest.mark.processes
def test_a_node_whose_llama_cpp_dies_of_sigill_shows_why_and_answers_503(tmp_path: Path) -> None:
    site = tmp_path / "broken-llama"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BROKEN_DECODE)
    node = Instance(tmp_path / "node", PYTHONPATH=str(site))
    node.data_dir.mkdir()
    supervisor = node.run("web", "engine")
    try:
        engine = wait_for(
            lambda: (c := node.component("engine")) and "SIGILL" in c["detail"] and c,
            120,
            "the engine to say llama.cpp died of SIGILL",
        )
        assert engine["state"] == "down"
        assert "illegal instruction (SIGILL)" in engine["detail"]
        assert "make rebuild-llama" in engine["detail"]
        engine_pids = children(supervisor.pid)

        owner = Keys.generate()
        node.claim(owner)
        created = node.manage("apikey", "create", owner.public_key().to_bech32(), "--name", "t")
        client = openai.OpenAI(
            base_url=f"{node.url}/v1",
            api_key=created.stdout.strip().splitlines()[-1],
            max_retries=0,
        )
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION)  # type: ignore[arg-type]

        assert refused.value.status_code == 503
        assert refused.value.body["code"] == "engine_broken"  # type: ignore[index]
        assert "illegal instruction (SIGILL)" in refused.value.body["message"]  # type: ignore[index]
        time.sleep(3)  # a crash loop would have restarted the engine by now
        assert children(supervisor.pid) == engine_pids
        assert "exited" not in node.logs()
    finally:
        node.stop()
