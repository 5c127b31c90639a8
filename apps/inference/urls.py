from django.urls import path

from apps.inference import views

app_name = "inference"
urlpatterns = [
    path("", views.catalog, name="catalog"),
]
