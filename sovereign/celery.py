"""The Celery application: configured from Django settings (CELERY_*), tasks found in apps."""

from __future__ import annotations

import os

from celery import Celery

from apps.system.heartbeat import WorkerHeartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sovereign.settings")

app = Celery("sovereign")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["consumer"].add(WorkerHeartbeat)
