"""Hard stops on every path: a seed phrase, an nsec or an extended private key in a request to
an outside model is refused with HTTP 400 `secret_in_request` and a message naming what was
found (never the value), through /v1 (streamed and whole) and the chat; nothing reaches the
provider, no egress record is written, nothing is paid, and the chat's conversation is as it
was. So is a request to a provider the owner trusts, a conversation that held a secret earlier,
a cross-check, and the proof of payment of the household's own live token.

The provider is the Aperture-shaped L402 double, paid over a channel between two lightningd
doubles: a request that got through would be paid, and the wallet's journal would show it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from mnemonic import Mnemonic
from nostr_sdk import Keys

from apps.inference import conversations
from apps.inference.models import Conversation
from apps.privacy.models import Egress
from apps.providers import services
from apps.providers.models import OutsideRequest
from apps.wallet.models import Payment
from tests.lightningd import LightningdDouble
from tests.privacy.household import (
    EMAIL,
    api_key,
    chat_ask,
    chat_post,
    provider_double,
    v1_streamed,
    v1_whole,
)
from tests.providers.doubles.l402 import L402Double

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 20_000
MODEL = "aperture/strong-1"
# BIP-32's first test vector, the master private key.
XPRV = (
    "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TG"
    "tRBeJgk33yuGBxrMPHi"
)
SECRETS = {
    "seed phrase": Mnemonic("english").to_mnemonic(bytes(range(16))),  # 12 words, valid
    "nsec": Keys.generate().secret_key().to_bech32(),
    "xprv": XPRV,
}
SAYS = {
    "seed phrase": "a wallet seed phrase (BIP-39 words)",
    "nsec": "a Nostr private key (nsec)",
    "xprv": "an extended private key of a wallet",
}
KINDS = list(SECRETS)


def holding(kind: str) -> str:
    return f"Keep this safe for me: {SECRETS[kind]} and mail {EMAIL} when done."


@pytest.fixture
def aperture(tmp_path: Path, owner: Any, settings: Any) -> Iterator[L402Double]:
    """An L402 provider the household pays through its own node."""
    with (
        LightningdDouble(tmp_path / "provider-node", alias="provider") as provider_node,
        LightningdDouble(tmp_path / "household-node", alias="household") as household_node,
        L402Double(provider_node, price_msat=PRICE) as double,
    ):
        household_node.connect(provider_node, amount_sat=1_000_000, push_msat=100_000_000)
        settings.LIGHTNING_RPC = str(household_node.rpc_file)
        services.provider_add(double.url, kind="l402", name="aperture")
        yield double


def nothing_left(provider: L402Double, *, payments: int = 0, asked: int = 0) -> None:
    """Nothing more reached the provider than the `asked` requests before, nothing more was
    paid, no record of a request that left."""
    assert len(provider.requests) == asked and provider.challenges == payments
    assert len(provider.authorizations) == asked
    assert Payment.objects.count() == payments
    assert Egress.objects.count() == OutsideRequest.objects.count() == asked


def refusal_named(kind: str, message: str) -> None:
    assert message == f"Not sent: the message contains {SAYS[kind]}. Remove it and send again."
    assert SECRETS[kind] not in message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "whole"])
def test_v1_refuses_a_secret_before_anything_leaves_or_is_paid(
    member: Any, aperture: L402Double, kind: str, streamed: bool
) -> None:
    key = api_key(member)

    if streamed:
        status, [answer] = v1_streamed(key, holding(kind), model=MODEL)
    else:
        status, answer = v1_whole(key, holding(kind), model=MODEL)

    assert status == 400
    assert (answer["error"]["code"], answer["error"]["type"]) == (
        "secret_in_request",
        "invalid_request_error",
    )
    refusal_named(kind, answer["error"]["message"])
    nothing_left(aperture)


def conversation_as_it_is(conversation: Conversation) -> tuple[Any, ...]:
    conversation.refresh_from_db()
    messages = list(conversation.messages.values_list("id", "role", "content", "model_name"))
    return (conversation.title, conversation.vault_sealed, conversation.route_key, messages)


@pytest.fixture
def conversation(member: Any) -> Conversation:
    """A conversation the member had with the outside model before."""
    started = conversations.conversation_start(member, "Fences")
    conversations.question_save(started, f"Write to {EMAIL} about the fence.")
    conversations.answer_save(started, "Done.", {"model": MODEL, "provider": "aperture"}, "stop")
    return started


@pytest.mark.parametrize("kind", KINDS)
def test_the_chat_refuses_a_secret_and_leaves_the_conversation_as_it_was(
    member_client: Client, aperture: L402Double, conversation: Conversation, kind: str
) -> None:
    before = conversation_as_it_is(conversation)

    status, [answer] = chat_ask(
        member_client,
        holding(kind),
        model=MODEL,
        price_msat=PRICE,
        conversation=conversation.pk,
    )

    assert status == 400
    refusal_named(kind, answer["error"])
    assert conversation_as_it_is(conversation) == before
    nothing_left(aperture)


def test_a_secret_earlier_in_the_conversation_stops_the_next_question_going_out(
    member: Any, member_client: Client, aperture: L402Double
) -> None:
    earlier = conversations.conversation_start(member, "Wallet")
    conversations.question_save(earlier, holding("seed phrase"))  # asked of a local model
    conversations.answer_save(earlier, "Keep it offline.", {"model": "local"}, "stop")
    before = conversation_as_it_is(earlier)

    status, [answer] = chat_ask(
        member_client, "Is that safe?", model=MODEL, price_msat=PRICE, conversation=earlier.pk
    )

    assert status == 400
    refusal_named("seed phrase", answer["error"])
    assert conversation_as_it_is(earlier) == before
    nothing_left(aperture)


def test_a_provider_the_owner_trusts_is_refused_a_secret_too(member: Any, owner: Any) -> None:
    trusted = provider_double("family", trusted=True)
    try:
        status, answer = v1_whole(api_key(member), holding("nsec"), model="family/strong-1")
    finally:
        trusted.stop()

    assert status == 400 and answer["error"]["code"] == "secret_in_request"
    assert trusted.requests == [] and not Egress.objects.exists()


def test_a_cross_check_sends_a_secret_to_none_of_its_models(
    member: Any, member_client: Client, aperture: L402Double, outside: Any, conversation: Any
) -> None:
    question = conversations.question_save(conversation, holding("xprv"))
    models = [MODEL, "lan/strong-1"]
    body = {"conversation": conversation.pk, "regenerate": question.pk, "models": models}

    status, [result] = chat_post(
        member_client, "/chat/crosscheck", {**body, "prices": {MODEL: PRICE, "lan/strong-1": 0}}
    )

    assert status == 200
    for answer in result["answers"]:
        refusal_named("xprv", answer["error"])
    assert outside.requests == []
    nothing_left(aperture)


def test_the_proof_of_payment_of_a_live_token_is_never_sent(
    member: Any, aperture: L402Double
) -> None:
    key = api_key(member)
    status, _ = v1_whole(key, "What is a sat?", model=MODEL)  # pays: the token is live
    assert status == 200
    preimage = Payment.objects.get().preimage

    status, answer = v1_whole(key, f"Is {preimage} a good proof?", model=MODEL)

    assert status == 400 and answer["error"]["code"] == "secret_in_request"
    assert "proof of payment (preimage) of a live token" in answer["error"]["message"]
    assert preimage not in answer["error"]["message"]
    nothing_left(aperture, payments=1, asked=1)
