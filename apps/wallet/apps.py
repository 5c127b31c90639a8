from django.apps import AppConfig


class WalletConfig(AppConfig):
    name = "apps.wallet"
    label = "wallet"
    verbose_name = "Lightning wallet"

    def ready(self) -> None:
        from apps.audit.services import labels_register
        from apps.wallet.models import AuditAction

        labels_register(dict(AuditAction.choices))
