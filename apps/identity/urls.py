from django.urls import path

from apps.identity import views

app_name = "identity"
urlpatterns = [
    path("setup/", views.setup, name="setup"),
    path("login/", views.login_page, name="login"),
    path("auth/challenge", views.challenge, name="challenge"),
    path("auth/login", views.verify, name="verify"),
    path("auth/code/send", views.code_send, name="code-send"),
    path("auth/code/verify", views.code_verify, name="code-verify"),
    path("auth/remote/start", views.remote_start, name="remote-start"),
    path("auth/remote/status", views.remote_status, name="remote-status"),
    path("auth/bunker", views.bunker, name="bunker"),
    path("logout/", views.logout_view, name="logout"),
    path("start/", views.start, name="start"),
    path("shared/", views.shared, name="shared"),
    path("people/", views.people, name="people"),
    path("people/<str:pubkey>/picture", views.picture, name="picture"),
    path("keys/", views.api_keys, name="keys"),
    path("api/me", views.api_me, name="api-me"),
]
