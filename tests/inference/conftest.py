"""What the inference tests share: the catalog's row for the bundled model (no engine), and
a claimed node running the web server and the engine (for the browser tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nostr_sdk import Keys

from apps.inference.models import LocalModel
from tests.instances import Instance

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def model(db: None) -> LocalModel:
    return LocalModel.objects.create(
        name=MODEL, file_name="smollm2.gguf", size=1, sha256="a" * 64, architecture="llama",
        parameters=135_000_000, quantization="Q8_0", source=LocalModel.Source.BUNDLED,
    )  # fmt: skip


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    instance = Instance(tmp_path_factory.mktemp("node"))
    instance.run("web", "engine")
    instance.wait_until("engine", "up", timeout=120)
    instance.claim(Keys.generate())
    yield instance
    instance.stop()
