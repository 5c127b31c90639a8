from django.apps import AppConfig


class SharingConfig(AppConfig):
    name = "apps.sharing"
    label = "sharing"
    verbose_name = "Sharing"

    def ready(self) -> None:
        from apps.audit.services import labels_register
        from apps.sharing.services import AuditAction

        labels_register(dict(AuditAction.choices))
