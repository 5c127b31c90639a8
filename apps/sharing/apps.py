from django.apps import AppConfig


class SharingConfig(AppConfig):
    name = "apps.sharing"
    label = "sharing"
    verbose_name = "Sharing"

    def ready(self) -> None:
        from apps.audit.services import labels_register
        from apps.sharing.keys import AUDIT_FOLDED, AUDIT_LABELS

        labels_register(AUDIT_LABELS, folded=AUDIT_FOLDED)
