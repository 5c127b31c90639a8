from django.apps import AppConfig


class SharingConfig(AppConfig):
    name = "apps.sharing"
    label = "sharing"
    verbose_name = "Sharing"

    def ready(self) -> None:
        # Every audit label of the app, registered here once.
        from apps.audit.services import labels_register
        from apps.sharing import guard, keys, stranger
        from apps.sharing.services import AuditAction

        labels_register(guard.AUDIT_LABELS, folded=guard.AUDIT_FOLDED)
        labels_register(stranger.AUDIT_LABELS, folded=stranger.AUDIT_FOLDED)
        labels_register(keys.AUDIT_LABELS, folded=keys.AUDIT_FOLDED)
        labels_register(dict(AuditAction.choices))
