from django.urls import path

from apps.providers import views

app_name = "providers"
urlpatterns = [
    path("", views.providers_page, name="page"),
    path("add", views.provider_add, name="add"),
    path("<str:name>/test", views.provider_test, name="test"),
    path("<str:name>/remove", views.provider_remove, name="remove"),
]
