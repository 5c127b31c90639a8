from __future__ import annotations

from django.urls import include, path
from django.views.generic import RedirectView

from apps.system import views as system_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="system:page"), name="home"),
    path("healthz", system_views.healthz, name="healthz"),
    path("system/", include("apps.system.urls")),
]
