"""Models a route may name, as a provider's catalog and the node's own models leave them in
the database: nothing is asked of any server."""

from __future__ import annotations

from apps.inference.models import LocalModel
from apps.providers.models import Provider, ProviderModel

LOCAL = "smollm2-135m-instruct"


def models_in_catalog() -> None:
    """ppq/gpt-4o at 21 sat a request, ppq/llama-3.3-70b at 5 sat, and the node's own model."""
    ppq = Provider.objects.create(
        name="ppq",
        kind="prepaid",
        base_url="https://api.ppq.ai",
        max_price_msat=100_000,
        topup_msat=1_000_000,
    )
    ProviderModel.objects.create(provider=ppq, model_id="gpt-4o", request_msat=21_000)
    ProviderModel.objects.create(provider=ppq, model_id="llama-3.3-70b", request_msat=5_000)
    LocalModel.objects.create(
        name=LOCAL,
        file_name="smollm2.gguf",
        size=1,
        sha256="a" * 64,
        architecture="llama",
        parameters=135_000_000,
        quantization="Q8_0",
        source=LocalModel.Source.BUNDLED,
    )
