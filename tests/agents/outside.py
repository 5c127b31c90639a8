"""Outside providers as their catalogs left them in the database, never called: enough for a
step's privacy preview (what would leave, and to whom) to be worked out."""

from __future__ import annotations

from apps.providers.models import Provider, ProviderModel

PRICE_MSAT = 20_000  # what each model asks a request: within every step's estimate


def outside_rows() -> None:
    """acme/big and beta/wise, the models the second-opinion plans of these tests call."""
    for name, model_id in (("acme", "big"), ("beta", "wise")):
        provider = Provider.objects.create(
            name=name, kind="l402", base_url="http://127.0.0.1:9", max_price_msat=50_000,
            topup_msat=0,
        )  # fmt: skip
        ProviderModel.objects.create(provider=provider, model_id=model_id, request_msat=PRICE_MSAT)
