from django.urls import path, re_path

from apps.inference import api

urlpatterns = [
    path("models", api.models_list, name="v1-models"),
    path("chat/completions", api.chat_completions, name="v1-chat-completions"),
    re_path(r"^(?P<path>.*)$", api.unknown),  # anything else, a trailing slash too: JSON 404
]
