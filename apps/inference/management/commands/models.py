"""`manage.py models list|add PATH [--name NAME]|remove NAME`: the local model catalog."""

from __future__ import annotations

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
        remove = actions.add_parser("remove", help="remove a model and its file")
        remove.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] == "add":
                model = services.model_add_path(Path(options["path"]), name=options["name"])
                self.stdout.write(f"Added {model.name} (sha256 {model.sha256}).")
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
