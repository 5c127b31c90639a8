"""What the inference tests share: the catalog's row for the bundled model (no engine)."""

from __future__ import annotations

import pytest

from apps.inference.models import LocalModel

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def model(db: None) -> LocalModel:
    return LocalModel.objects.create(
        name=MODEL, file_name="smollm2.gguf", size=1, sha256="a" * 64, architecture="llama",
        parameters=135_000_000, quantization="Q8_0", source=LocalModel.Source.BUNDLED,
    )  # fmt: skip
