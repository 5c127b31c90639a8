"""The local model catalog: GGUF files in the data directory's models folder."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models


class LocalModel(models.Model):
    class Source(models.TextChoices):
        BUNDLED = "bundled", "Bundled with Sovereign"
        PATH = "path", "Added from a file"
        URL = "url", "Downloaded"

    name = models.SlugField(max_length=100, unique=True)  # what API clients ask for
    file_name = models.CharField(max_length=255, unique=True)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    architecture = models.CharField(max_length=50)
    parameters = models.BigIntegerField()
    quantization = models.CharField(max_length=20)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    chat_template = models.TextField(blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    added_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> Path:
        return Path(settings.DATA_DIR) / "models" / self.file_name

    @property
    def parameters_label(self) -> str:
        for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
            if self.parameters >= size:
                return f"{self.parameters / size:.1f}{unit}".replace(".0", "")
        return str(self.parameters)
