"""A conversation's vault kept with it, sealed: the same private value goes out as the same
placeholder every turn. It holds the values themselves, so it is sealed at rest like the
node's other secrets, and a state that cannot be read starts a new vault (never half a one)."""

from __future__ import annotations

import json

from apps.privacy.vault import Vault, VaultStateInvalid
from apps.providers import sealing


def vault_sealed(vault: Vault) -> str:
    return sealing.seal(json.dumps(vault.state())) if len(vault) else ""


def vault_unsealed(sealed: str) -> Vault:
    opened = sealing.unseal(sealed)
    if not opened:
        return Vault()
    try:
        return Vault.from_state(json.loads(opened))
    except (ValueError, VaultStateInvalid):
        return Vault()
