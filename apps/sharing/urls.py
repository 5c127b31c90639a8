"""Routstr's Lightning endpoints, under /lightning/ (its /v1 ones are in the API's urls)."""

from django.urls import path

from apps.sharing import routstr_views

urlpatterns = [
    path("invoice", routstr_views.invoice_create, name="routstr-invoice"),
    path(
        "invoice/<str:invoice_id>/status",
        routstr_views.invoice_status,
        name="routstr-invoice-status",
    ),
    path("recover", routstr_views.invoice_recover, name="routstr-recover"),
]
