"""Which `Kind` speaks for each kind of provider (backends/<kind>.py)."""

from __future__ import annotations

import importlib

from apps.providers.backends.base import Kind, ProviderInfo

KINDS = {
    "openai": "apps.providers.backends.openai.HomeNetworkKind",
    "l402": "apps.providers.backends.l402.L402Kind",
    "mpp": "apps.providers.backends.mpp.MppKind",
    "prepaid": "apps.providers.backends.prepaid.PrepaidKind",
}


def kind_for(provider: ProviderInfo) -> Kind:
    module, _, name = KINDS[provider.kind].rpartition(".")
    kind: type[Kind] = getattr(importlib.import_module(module), name)
    return kind()
