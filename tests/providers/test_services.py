"""Adding and removing providers: what is refused, and that nothing changes then."""

from __future__ import annotations

from typing import Any

import pytest

from apps.providers import services
from apps.providers.models import Credential, Provider
from tests.providers.doubles.openai_shape import OpenAIShapedDouble


@pytest.mark.parametrize("url", ["http://1.1.1.1:8080", "http://provider.example"])
@pytest.mark.django_db
def test_a_paid_provider_across_the_internet_must_be_reached_over_https(url: str) -> None:
    with pytest.raises(services.ProviderError, match="https://"):
        services.provider_add(url, kind="l402", name="far")
    assert not Provider.objects.exists()


@pytest.mark.django_db
def test_a_provider_is_not_removed_while_a_payment_for_it_may_complete(owner: Any) -> None:
    with OpenAIShapedDouble() as double:
        provider = services.provider_add(double.url, kind="l402", name="near")
    Credential.objects.create(provider=provider, scheme="L402", payment_purpose="l402:near:1")

    with pytest.raises(services.ProviderError, match="still being settled"):
        services.provider_remove("near")
    assert Provider.objects.filter(name="near").exists()

    Credential.objects.update(state=Credential.State.LIVE)
    services.provider_remove("near")
    assert not Provider.objects.exists() and not Credential.objects.exists()
