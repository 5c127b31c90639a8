"""`manage.py probe_worker`: send a test task through the broker and wait for a worker."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.system import services


class Command(BaseCommand):
    help = "Send a test task through the broker and report which worker ran it, and how fast."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait")

    def handle(self, *args: Any, **options: Any) -> None:
        probe = services.probe_send()
        probe = services.probe_wait(str(probe.id), timeout=options["timeout"])
        if probe.answered_at is None:
            raise CommandError(f"No worker ran the test task within {options['timeout']:g} s.")
        self.stdout.write(f"{probe.answered_by} ran the test task in {probe.round_trip_ms} ms.")
