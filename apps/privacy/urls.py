from django.urls import path

from apps.privacy import views

app_name = "privacy"
urlpatterns = [
    path("egress/", views.egress_page, name="egress"),
]
