from django.urls import path

from apps.providers import views

app_name = "providers"
urlpatterns = [
    path("", views.providers_page, name="page"),
    path("add", views.provider_add, name="add"),
    path("routes/set", views.route_set, name="route-set"),
    path("routes/<str:name>/remove", views.route_remove, name="route-remove"),
    path("<str:name>/test", views.provider_test, name="test"),
    path("<str:name>/remove", views.provider_remove, name="remove"),
    path("<str:name>/trust", views.provider_trust, name="trust"),
]
