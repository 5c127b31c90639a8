from django.urls import path

from apps.inference import chat_views, settings_views

app_name = "chat"
urlpatterns = [
    path("", chat_views.chat_page, name="new"),
    path("private/", chat_views.chat_page, {"private": True}, name="private"),
    path("<int:conversation_id>/", chat_views.chat_page, name="conversation"),
    path("<int:conversation_id>/delete", chat_views.conversation_delete, name="delete"),
    path("<int:conversation_id>/restore", chat_views.conversation_restore, name="restore"),
    path("<int:conversation_id>/rename", chat_views.conversation_rename, name="rename"),
    path("ask", chat_views.ask, name="ask"),
    path("models", chat_views.models_priced, name="models"),
    path("crosscheck", chat_views.cross_check, name="crosscheck"),
    path("preview", chat_views.preview, name="preview"),
    path("stopped", chat_views.answer_stopped, name="stopped"),
    path("settings/", settings_views.settings_page, name="settings"),
]
