from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "apps.providers"
    label = "providers"
    verbose_name = "Outside providers"

    def ready(self) -> None:
        from apps.audit.services import labels_register

        labels_register(
            {
                "provider_added": "Provider added",
                "provider_removed": "Provider removed",
                "provider_trusted": "Provider trusted or not",
                "outside_request": "Request sent outside",
                "route_set": "Route set",
                "route_removed": "Route removed",
            }
        )
