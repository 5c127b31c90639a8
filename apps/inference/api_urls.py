from django.urls import path, re_path

from apps.inference import api
from apps.sharing import routstr_views

urlpatterns = [
    path("models", api.models_list, name="v1-models"),
    path("chat/completions", api.chat_completions, name="v1-chat-completions"),
    # Routstr's (apps/sharing): a stranger's `sk-` key and the node's card
    path("balance/info", routstr_views.balance_info, name="v1-balance-info"),
    path("balance/lightning/invoice", routstr_views.invoice_create),  # Routstr's older path
    path("info", routstr_views.node_info, name="v1-info"),
    re_path(r"^(?P<path>.*)$", api.unknown),  # anything else, a trailing slash too: JSON 404
]
