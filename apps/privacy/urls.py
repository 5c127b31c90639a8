from django.urls import path
from django.views.generic import RedirectView

from apps.privacy import views

app_name = "privacy"
urlpatterns = [
    path("", views.privacy_page, name="page"),
    # The page's first address, when it showed only the egress record.
    path("egress/", RedirectView.as_view(pattern_name="privacy:page"), name="egress"),
    path("egress.json", views.egress_export, name="export"),
    path("settings", views.settings_save, name="settings"),
    path("terms/add", views.terms_add, name="terms-add"),
    path("terms/remove", views.terms_remove, name="terms-remove"),
]
