from __future__ import annotations

import uuid

from django.db import models


class WorkerHeartbeat(models.Model):
    """The last sign of life of one Celery worker, written by the worker itself."""

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.hostname


class WorkerProbe(models.Model):
    """A test task sent through the broker; the worker that runs it marks it answered."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    sent_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return str(self.id)

    @property
    def round_trip_ms(self) -> int | None:
        if self.answered_at is None:
            return None
        return round((self.answered_at - self.sent_at).total_seconds() * 1000)
