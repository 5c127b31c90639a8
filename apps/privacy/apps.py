from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "apps.privacy"
    label = "privacy"
    verbose_name = "Privacy"

    def ready(self) -> None:
        from apps.audit.services import labels_register

        labels_register(
            {
                "privacy_settings_changed": "Privacy settings changed",
                "privacy_terms_added": "Words added to the privacy list",
                "privacy_terms_removed": "Words removed from the privacy list",
            }
        )
