from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "apps.identity"
    label = "identity"
    verbose_name = "Identity"

    def ready(self) -> None:
        from apps.audit.services import labels_register
        from apps.identity.models import AuditAction

        # Anyone can knock: a run of refused logins by nobody logged in is one audit line.
        labels_register(dict(AuditAction.choices), folded=[AuditAction.LOGIN_FAILED])
