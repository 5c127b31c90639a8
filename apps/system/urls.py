from django.urls import path

from apps.system import views

app_name = "system"
urlpatterns = [
    path("", views.system_page, name="page"),
    path("probe", views.probe_send, name="probe"),
]
