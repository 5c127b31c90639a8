"""`redaction.outbound`, what every outside request passes through: a hard stop refuses it, for
a trusted provider too; for any other provider each private value leaves as a placeholder,
stable across a conversation's turns."""

from __future__ import annotations

import hashlib
import os

import pytest

from apps.inference.backends.base import AnswerRefused, RefusalCode
from apps.privacy import redaction
from apps.privacy.vault import Vault
from apps.providers import credentials
from apps.providers.models import Provider
from apps.wallet.models import Payment

pytestmark = pytest.mark.django_db

# BIP-39's all-zero entropy phrase, NIP-19's example nsec, BIP-32 test vector 1's master xprv.
SEED_12 = " ".join(["abandon"] * 11 + ["about"])
NSEC = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
XPRV = (
    "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TG"
    "tRBeJgk33yuGBxrMPHi"
)
SECRETS = {
    "seed phrase": (SEED_12, "a wallet seed phrase (BIP-39 words)"),
    "nsec": (NSEC, "a Nostr private key (nsec)"),
    "xprv": (XPRV, "an extended private key of a wallet"),
}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def refusal(messages: list[dict[str, str]], *, trusted: bool = False) -> AnswerRefused:
    with pytest.raises(AnswerRefused) as refused:
        redaction.outbound(messages, trusted=trusted)
    return refused.value


# --- hard stops ------------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
@pytest.mark.parametrize("secret", SECRETS, ids=list(SECRETS))
def test_a_secret_stops_the_request_naming_what_not_the_value(secret: str, trusted: bool) -> None:
    value, described = SECRETS[secret]

    refused = refusal(user(f"Is this safe to keep?\n{value}\nThanks"), trusted=trusted)

    assert (refused.code, refused.status) == (RefusalCode.SECRET_IN_REQUEST, 400)
    assert described in str(refused)
    assert value not in str(refused) and value[:12] not in str(refused)


def test_a_secret_in_an_earlier_message_stops_the_whole_request() -> None:
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": f"My backup: {NSEC}"},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "What is the weather like?"},
    ]

    assert refusal(messages).code == RefusalCode.SECRET_IN_REQUEST


# --- a live token's preimage -----------------------------------------------------------------


@pytest.fixture
def provider() -> Provider:
    return Provider.objects.create(
        name="near",
        kind=Provider.Kind.L402,
        base_url="https://near.example",
        max_price_msat=10_000,
        topup_msat=0,
    )


def token_bought(
    provider: Provider, purpose: str, *, state: str = "live", kept: bool = True
) -> str:
    """An L402 token as the paying kinds keep it, its credential in `state`: the preimage stays
    in the wallet's payment of the same purpose (`kept`: it may be part of a live token)."""
    preimage = os.urandom(32).hex()
    credential_id = credentials.credential_open(provider.pk, "L402", "macaroon:abc", purpose)
    Payment.objects.create(
        purpose=purpose,
        label=f"sovereign:{purpose}",
        caller=f"provider:{provider.name}",
        bolt11="lnbcrt10n1...",
        payment_hash=hashlib.sha256(bytes.fromhex(preimage)).hexdigest(),
        destination="02" + "11" * 32,
        amount_msat=1_000,
        max_fee_msat=10,
        state=Payment.State.COMPLETE,
        preimage=preimage,
        token_may_be_live=kept,
    )
    if state != "pending":
        credentials.credential_live(credential_id)
    if state == "spent":
        credentials.credential_spent(credential_id)
    return preimage


def test_a_live_tokens_preimage_stops_the_request(provider: Provider) -> None:
    preimage = token_bought(provider, "l402:near:1")

    assert credentials.live_token_preimages() == {preimage}
    refused = refusal(user(f"Why does the server want proof {preimage.upper()}?"))
    assert refused.code == RefusalCode.SECRET_IN_REQUEST
    assert "preimage" in str(refused) and preimage not in str(refused).lower()


def test_a_pending_tokens_preimage_stops_the_request_to_a_trusted_provider_too(
    provider: Provider,
) -> None:
    preimage = token_bought(provider, "l402:near:1", state="pending")

    assert credentials.live_token_preimages() == {preimage}
    assert refusal(user(f"proof: {preimage}"), trusted=True).code == RefusalCode.SECRET_IN_REQUEST


def test_a_spent_tokens_preimage_is_not_a_stop(provider: Provider) -> None:
    live = token_bought(provider, "l402:near:1")
    spent = token_bought(provider, "l402:near:2", state="spent")
    never_a_token = token_bought(provider, "l402:near:3", kept=False)

    assert credentials.live_token_preimages() == {live}
    for preimage in (spent, never_a_token):
        redaction.outbound(user(f"An old proof of payment: {preimage}"), trusted=False)


# --- what leaves -----------------------------------------------------------------------------


def test_a_trusted_provider_gets_the_messages_as_they_are() -> None:
    messages = [{"role": "user", "content": "Mail anna@example.org", "name": "anna"}]

    leaving = redaction.outbound(messages, trusted=True)

    assert leaving.messages == messages
    assert (leaving.found, leaving.vault, leaving.redacted) == ({}, None, False)


def test_an_untrusted_provider_gets_placeholders_and_the_kinds_counted_over_messages() -> None:
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Mail anna@example.org or bob@example.org", "name": "anna"},
        {"role": "user", "content": "Again: anna@example.org, from 192.0.2.7"},
    ]

    leaving = redaction.outbound(messages, trusted=False)

    assert leaving.messages == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Mail [EMAIL_1] or [EMAIL_2]", "name": "anna"},
        {"role": "user", "content": "Again: [EMAIL_1], from [IP_1]"},
    ]
    assert leaving.found == {"email": 3, "ip": 1}
    assert leaving.redacted


def test_a_conversations_vault_keeps_each_values_placeholder_across_turns() -> None:
    vault = Vault()
    redaction.outbound(user("Mail anna@example.org"), trusted=False, vault=vault)

    later = redaction.outbound(
        user("Now bob@example.org and again anna@example.org"), trusted=False, vault=vault
    )

    assert later.messages[0]["content"] == "Now [EMAIL_2] and again [EMAIL_1]"
    assert later.vault is vault


def test_text_with_nothing_private_leaves_unchanged() -> None:
    text = "What is the boiling point of water at 2000 m, in °C? Version 1.2.3, 12.05.2024."

    leaving = redaction.outbound(user(text), trusted=False)

    assert leaving.messages == user(text)
    assert leaving.found == {}
