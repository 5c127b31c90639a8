"""`manage.py sharing`: each verb, and bad input refused by name with nothing changed."""

from __future__ import annotations

import io
import json
from datetime import UTC, timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference.models import LocalModel
from apps.sharing.models import Balance, Offer, Sale, Share, Usage
from apps.wallet.models import Budget
from tests.conftest import PERSONA_KEYS

pytestmark = pytest.mark.django_db
MODEL = "smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def model(db: None) -> LocalModel:
    return LocalModel.objects.create(
        name=MODEL, file_name="smollm2.gguf", size=1, sha256="a" * 64, architecture="llama",
        parameters=135_000_000, quantization="Q8_0", source=LocalModel.Source.BUNDLED,
    )  # fmt: skip


def sharing(*argv: str) -> str:
    out = io.StringIO()
    call_command("sharing", *argv, stdout=out)
    return out.getvalue()


def npub(name: str) -> str:
    return str(PERSONA_KEYS[name].public_key().to_bech32())


def refused(*argv: str) -> str:
    with pytest.raises(CommandError) as error:
        sharing(*argv)
    return str(error.value)


def offers() -> list[tuple[str, int, bool, int | None]]:
    rows = Offer.objects.values_list("model", "price_msat", "per_1k_tokens", "max_request_msat")
    return list(rows)


def test_sell_puts_a_model_on_sale_per_request_and_records_it() -> None:
    said = sharing("sell", MODEL, "--price-sat", "5")

    assert offers() == [(MODEL, 5000, False, None)]
    assert "5 sat a request" in said
    assert AuditEvent.objects.filter(action="offer_set", subject=MODEL).exists()


def test_sell_per_1k_tokens_needs_its_most_and_changes_the_price() -> None:
    sharing("sell", MODEL, "--price-sat", "5")
    sharing("sell", MODEL, "--price-sat", "2", "--per-1k-tokens", "--max-request-sat", "50")

    assert offers() == [(MODEL, 2000, True, 50_000)]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["nope", "--price-sat", "5"], "no local model named 'nope'"),
        ([MODEL, "--price-sat", "0"], "from 1 to 1,000,000"),
        ([MODEL, "--price-sat", "1000001"], "from 1 to 1,000,000"),
        ([MODEL, "--price-sat", "5", "--per-1k-tokens"], "needs a most"),
        ([MODEL, "--price-sat", "5", "--per-1k-tokens", "--max-request-sat", "4"], "at least"),
        ([MODEL, "--price-sat", "5", "--max-request-sat", "9"], "only to a price per 1,000"),
    ],
    ids=["unknown model", "zero", "too much", "no most", "most below price", "most alone"],
)
def test_sell_refuses_bad_terms_and_changes_nothing(argv: list[str], said: str) -> None:
    sharing("sell", MODEL, "--price-sat", "7")

    assert said in refused("sell", *argv)
    assert offers() == [(MODEL, 7000, False, None)]
    assert AuditEvent.objects.filter(action="offer_set").count() == 1


def test_stop_takes_a_model_off_sale_and_refuses_one_not_on_sale() -> None:
    sharing("sell", MODEL, "--price-sat", "5")

    assert "no longer on sale" in sharing("stop", MODEL)
    assert offers() == []
    assert "not on sale" in refused("stop", MODEL)
    assert AuditEvent.objects.filter(action="offer_stopped").count() == 1


def test_friend_shares_models_with_a_quota_and_remove_ends_it(friend: Any) -> None:
    said = sharing(
        "friend", npub("friend"), "--models", MODEL, "--daily-requests", "20",
        "--daily-tokens", "5000",
    )  # fmt: skip

    share = Share.objects.get(member=friend)
    assert (share.model_names, share.daily_requests, share.daily_tokens) == ([MODEL], 20, 5000)
    assert "20 requests and 5000 tokens a day" in said
    sharing("friend", npub("friend"), "--remove")
    assert not Share.objects.exists()
    assert "Nothing is shared" in refused("friend", npub("friend"), "--remove")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["friend", "--models", "nope", "--daily-requests", "5"], "no local model named 'nope'"),
        (["friend", "--models", "alpha/strong-1", "--daily-requests", "5"], "no outside model"),
        (["friend", "--models", "route/all", "--daily-requests", "5"], "is a route"),
        (["friend", "--models", MODEL, "--daily-requests", "0"], "from 1 to"),
        (["friend", "--models", MODEL, "--daily-requests", "5", "--daily-tokens", "0"], "from 1"),
        (["friend", "--models", MODEL], "--daily-requests"),
        (["friend", "--remove", "--models", MODEL], "--remove takes no"),
        (["member", "--models", MODEL, "--daily-requests", "5"], "not a friend"),
        (["stranger", "--models", MODEL, "--daily-requests", "5"], "not a member of this node"),
    ],
    ids=[
        "unknown model",
        "unknown outside",
        "route",
        "no requests",
        "no tokens",
        "no quota",
        "remove and share",
        "a member",
        "not on the node",
    ],  # fmt: skip
)
def test_friend_refuses_bad_input_and_changes_nothing(
    friend: Any, member: Any, argv: list[str], said: str
) -> None:
    sharing("friend", npub("friend"), "--models", MODEL, "--daily-requests", "9")
    who, *rest = argv

    assert said in refused("friend", npub(who), *rest)
    share = Share.objects.get()
    assert (share.member, share.model_names, share.daily_requests) == (friend, [MODEL], 9)


def test_friend_refuses_an_npub_that_is_not_one(friend: Any) -> None:
    assert "not a valid Nostr public key" in refused("friend", "npub1nope", "--models", MODEL,
                                    "--daily-requests", "5")  # fmt: skip
    assert not Share.objects.exists()


def test_an_outside_model_is_shared_only_with_the_friends_own_cap(friend: Any, added: None) -> None:
    base = ["friend", npub("friend"), "--models", MODEL, "alpha/strong-1", "--daily-requests", "5"]

    assert "cap" in refused(*base)
    assert not Share.objects.exists() and not Budget.objects.filter(member=friend).exists()
    sharing(*base, "--outside-cap-sat", "100")

    assert Share.objects.get().model_names == [MODEL, "alpha/strong-1"]
    allowance = Budget.objects.get(member=friend)
    assert (allowance.scope, allowance.period, allowance.limit_msat) == ("member", "day", 100_000)


def test_status_shows_offers_friends_and_strangers_as_text_and_json(friend: Any) -> None:
    sharing("sell", MODEL, "--price-sat", "3")
    sharing("friend", npub("friend"), "--models", MODEL, "--daily-requests", "20")
    Usage.objects.create(member=friend, day=timezone.now().astimezone(UTC).date(), requests=3)
    paid = Balance.objects.create(
        kind=Balance.Kind.KEY, token_id="b" * 64, balance_msat=21_000,
        expires_at=timezone.now() + timedelta(days=1),
    )  # fmt: skip
    Sale.objects.create(balance=paid, model=MODEL, completion_tokens=9, cost_msat=4000)

    text = sharing("status")
    shown = json.loads(sharing("status", "--json"))

    assert f"{MODEL}\t3 sat a request" in text and "3/20 requests" in text
    assert shown["offers"] == [
        {"model": MODEL, "price_msat": 3000, "per_1k_tokens": False, "max_request_msat": None}
    ]
    assert shown["friends"][0]["npub"] == npub("friend")
    assert shown["friends"][0]["requests_today"] == 3
    assert shown["strangers"] == {
        "sales": 1, "sold_msat": 4000, "sales_today": 1, "balances": 1, "unspent_msat": 21_000
    }  # fmt: skip
    assert "answers sold: 1 (1 today), for 4 sat; paid balances: 1, holding 21 sat" in text
    assert shown["resets_at"].endswith("+00:00")
