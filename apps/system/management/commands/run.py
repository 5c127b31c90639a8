"""`manage.py run`: the whole product in one command (what `make run` calls)."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
import urllib.request
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.identity import services as identity
from apps.inference.services import catalog_sync
from sovereign.environment import directory_tighten
from sovereign.supervisor import Program, StartupFailed, Supervisor

PROGRAMS = ("web", "worker", "engine")


def program_argv(name: str) -> list[str]:
    level = settings.LOG_LEVEL.lower()
    if name == "web":
        return [
            sys.executable, "-m", "uvicorn", "sovereign.asgi:application",
            "--host", settings.HOST, "--port", str(settings.PORT),
            "--lifespan", "off", "--no-access-log", "--log-level", level,
            # The client's address is read by the node (apps.identity.access.client_address):
            # uvicorn's would take the leftmost X-Forwarded-For, which the client writes.
            "--no-proxy-headers",
        ]  # fmt: skip
    if name == "engine":
        return [sys.executable, str(settings.BASE_DIR / "manage.py"), "engine"]
    return [
        sys.executable, "-m", "celery", "--app", "sovereign", "worker",
        "--loglevel", level, "--concurrency", str(settings.WORKER_CONCURRENCY),
        "--hostname", "worker@%h", "--without-mingle", "--without-gossip",
        "--beat", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME,
    ]  # fmt: skip


def _check_port_free() -> None:
    """Fail early, with a sentence, when another program holds the port.

    SO_REUSEADDR as uvicorn binds: connections the last run closed wait in TIME_WAIT for a
    minute, and they must not stop a restart.
    """
    with socket.socket(socket.AF_INET6 if ":" in settings.HOST else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.HOST, settings.PORT))
        except OSError as error:
            raise CommandError(
                f"Cannot listen on {settings.HOST}:{settings.PORT} ({error.strerror}). "
                "Set SOVEREIGN_PORT to a free port."
            ) from None


class Command(BaseCommand):
    help = "Prepare the database and run Sovereign's processes until Ctrl-C or SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "programs", nargs="*", metavar="web|worker|engine", help="which to run (default: all)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logging.basicConfig(level=settings.LOG_LEVEL, format="%(levelname)s %(name)s: %(message)s")
        directory_tighten(settings.DATA_DIR)
        names = options["programs"] or list(PROGRAMS)
        unknown = sorted(set(names) - set(PROGRAMS))
        if unknown:
            raise CommandError(
                f"Unknown program {', '.join(unknown)}: choose from {', '.join(PROGRAMS)}."
            )
        if "web" in names:
            self._prepare_web()
        supervisor = Supervisor([Program(name, program_argv(name)) for name in names])
        if "web" in names:
            threading.Thread(target=self._announce_when_up, args=(supervisor,), daemon=True).start()
        try:
            supervisor.run()
        except StartupFailed as error:
            raise CommandError(f"{error} Its output above says why.") from None
        self.stdout.write("Sovereign stopped.")

    def _prepare_web(self) -> None:
        _check_port_free()
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        catalog_sync()  # the bundled model on the first start, and files dropped in by hand
        if not identity.is_claimed():
            identity.setup_secret()  # made before anyone can ask for it, printed once web is up

    def _announce_when_up(self, supervisor: Supervisor) -> None:
        url = f"http://127.0.0.1:{settings.PORT}/healthz"
        while not supervisor.stopping.is_set():
            try:
                with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (our own address)
                    break
            except OSError:
                time.sleep(0.2)
        else:
            return
        self.stdout.write(f"Sovereign is running at {settings.PUBLIC_URL}/ (Ctrl-C stops it)")
        if not identity.is_claimed():
            self.stdout.write(
                f"Claim it at {settings.PUBLIC_URL}/setup/ with the setup secret: "
                f"{identity.setup_secret()}"
            )
