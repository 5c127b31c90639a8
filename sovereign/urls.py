from __future__ import annotations

from django.urls import include, path

from apps.identity import views as identity_views
from apps.sharing import stranger
from apps.system import views as system_views
from sovereign import dashboard

handler403 = dashboard.permission_denied
handler404 = dashboard.page_not_found
handler500 = dashboard.server_error

urlpatterns = [
    path("", identity_views.home, name="home"),
    path("favicon.ico", dashboard.favicon, name="favicon"),
    path("theme/", dashboard.theme_set, name="theme"),
    path("healthz", system_views.healthz, name="healthz"),
    path("system/", include("apps.system.urls")),
    path("chat/", include("apps.inference.chat_urls")),
    path("models/", include("apps.inference.urls")),
    path("wallet/", include("apps.wallet.urls")),
    path("providers/", include("apps.providers.urls")),
    path("privacy/", include("apps.privacy.urls")),
    path("agents/", include("apps.agents.urls")),
    path("sharing/", include("apps.sharing.page_urls")),
    path("v1/", include("apps.inference.api_urls")),
    path(".well-known/l402.json", stranger.well_known_l402, name="l402-manifest"),
    path("lightning/", include("apps.sharing.urls")),  # Routstr's flow: an invoice buys a key
    path("", include("apps.identity.urls")),
]
