"""`manage.py models list|add PATH|add-url URL|remove NAME`: the local model catalog."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.inference import services
from apps.inference.models import LocalModel
from apps.inference.services import CatalogError


class Command(BaseCommand):
    help = "List, add or remove local models (GGUF files)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("list", help="the catalog")
        add = actions.add_parser("add", help="register a GGUF file")
        add.add_argument("path")
        add.add_argument("--name", default="")
        add_url = actions.add_parser("add-url", help="download a GGUF file and register it")
        add_url.add_argument("url")
        add_url.add_argument("--name", default="")
        add_url.add_argument("--sha256", default="", help="refuse the file unless it has this hash")
        remove = actions.add_parser("remove", help="remove a model and its file")
        remove.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] == "add":
                model = services.model_add_path(Path(options["path"]), name=options["name"])
                self.stdout.write(f"Added {model.name} (sha256 {model.sha256}).")
            elif options["action"] == "add-url":
                self._add_url(options["url"], options["name"], options["sha256"])
            elif options["action"] == "remove":
                services.model_remove(options["name"])
                self.stdout.write(f"Removed {options['name']}.")
            else:
                for model in LocalModel.objects.order_by("name"):
                    self.stdout.write(
                        f"{model.name}\t{model.architecture}\t{model.parameters_label}\t"
                        f"{model.quantization}\t{model.context_length}\t{model.sha256}"
                    )
        except CatalogError as error:
            raise CommandError(str(error)) from None

    def _add_url(self, url: str, name: str, sha256: str) -> None:
        """Download in the foreground, showing the progress the Models page shows."""
        download = services.download_create(url, name=name, expected_sha256=sha256)
        runner = f"command line (pid {os.getpid()})"
        try:
            ended = services.download_run(download.pk, runner, watch=self._show_progress)
        except KeyboardInterrupt:
            raise CommandError("Stopped. Retry it on the Models page to go on.") from None
        finally:
            self.stdout.write("")
        if ended is None or ended.state != ended.State.DONE:
            raise CommandError(ended.error if ended else "Cancelled, or a worker took it over.")
        model = LocalModel.objects.get(name=ended.name)
        self.stdout.write(f"Added {model.name} (sha256 {model.sha256}).")

    def _show_progress(self, line: str) -> None:
        self.stdout.write(f"\r{line:<60}", ending="")
        self.stdout.flush()
