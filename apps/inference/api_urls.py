from django.urls import path

from apps.inference import api

urlpatterns = [
    path("models", api.models_list, name="v1-models"),
    path("chat/completions", api.chat_completions, name="v1-chat-completions"),
]
