from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "apps.agents"
    label = "agents"
    verbose_name = "Agents"

    def ready(self) -> None:
        from apps.agents.models import AuditAction
        from apps.audit.services import labels_register

        labels_register(dict(AuditAction.choices))
