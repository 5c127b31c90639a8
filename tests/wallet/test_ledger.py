"""The ledger and budgets over the journal, without a node: sums, periods, proofs, the export."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client

from apps.wallet import budgets
from apps.wallet.models import Budget, Payment

pytestmark = pytest.mark.django_db


def journal(purpose: str, state: str, amount: int, max_fee: int, fee: int | None = None,
            live: bool = False, **extra: Any) -> Payment:  # fmt: skip
    preimage = os.urandom(32)
    return Payment.objects.create(
        purpose=purpose, label=f"sovereign:{purpose}", caller=extra.pop("caller", "test"),
        bolt11="lnbcrt1...", payment_hash=hashlib.sha256(preimage).hexdigest(),
        destination="02" + "11" * 32, amount_msat=amount, max_fee_msat=max_fee, fee_msat=fee,
        state=state, preimage=preimage.hex() if state == "complete" else "",
        token_may_be_live=live, **extra,
    )  # fmt: skip


def test_committed_counts_pending_at_its_maximum_complete_at_its_cost_failed_not_at_all() -> None:
    journal("a", "pending", 10_000, 500)
    journal("b", "complete", 20_000, 500, fee=7)
    journal("c", "failed", 40_000, 500)

    household = budgets.budget_set("household", "month", 1_000_000)

    assert budgets.committed(budgets._scope_of(household), None) == 10_500 + 20_007
    assert budgets.remaining(household) == 1_000_000 - 30_507


def test_a_new_period_starts_afresh() -> None:
    old = journal("last-month", "complete", 50_000, 500, fee=0)
    Payment.objects.filter(pk=old.pk).update(created_at=datetime(2020, 1, 5, tzinfo=UTC))
    household = budgets.budget_set("household", "month", 60_000)

    assert budgets.remaining(household) == 60_000


def test_periods_begin_at_midnight_monday_and_the_first() -> None:
    wednesday = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)

    day, week, month = (budgets.period_start(p, wednesday) for p in ("day", "week", "month"))

    assert (day.day, day.hour, week.day, week.weekday(), month.day) == (25, 0, 23, 0, 1)  # type: ignore[union-attr]
    assert budgets.period_start("each", wednesday) is None


@pytest.mark.parametrize(
    ("scope", "period", "extra", "says"),
    [
        ("household", "each", {}, "per payment"),
        ("request", "day", {}, "per payment"),
        ("caller", "day", {}, "caller's name"),
        ("household", "day", {"caller": "x"}, "caller's name"),
        ("weekly", "day", {}, "Unknown"),
    ],
)
def test_a_budget_that_makes_no_sense_is_refused(
    scope: str, period: str, extra: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        budgets.budget_set(scope, period, 1000, **extra)
    assert not Budget.objects.exists()


def test_setting_a_budget_again_replaces_it() -> None:
    budgets.budget_set("household", "month", 1000)
    budgets.budget_set("household", "week", 2000)

    assert list(Budget.objects.values_list("period", "limit_msat")) == [("week", 2000)]


def test_the_export_has_every_payment_and_hides_live_tokens(owner_client: Client) -> None:
    kept = journal("report", "complete", 21_000, 500, fee=3)
    live = journal("l402-token", "complete", 5_000, 500, fee=1, live=True)

    response = owner_client.get("/wallet/ledger.csv")
    rows = {
        row["purpose"]: row
        for row in csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode()))
    }  # type: ignore[arg-type]

    assert rows["report"]["preimage"] == kept.preimage
    assert rows["report"]["proof_holds"] == "True" and rows["report"]["fee_msat"] == "3"
    assert live.preimage not in str(rows["l402-token"])
    assert rows["l402-token"]["proof_holds"] == "True"


def test_a_wrong_preimage_is_shown_as_a_proof_that_does_not_hold() -> None:
    payment = journal("x", "complete", 1000, 10, fee=0)
    payment.preimage = "00" * 32

    assert not payment.proof_holds


def test_the_wallet_page_is_the_owners_and_works_without_a_node(
    owner_client: Client, member_client: Client
) -> None:
    journal("shown", "complete", 21_000, 500, fee=3, caller="agent:7")

    page = owner_client.get("/wallet/").content.decode()

    assert "No Lightning node is connected" in page
    assert "agent:7" in page and "21 sat" in page
    assert member_client.get("/wallet/").status_code == 403


def test_the_owner_sets_budgets_on_the_page_and_bad_input_changes_nothing(
    owner_client: Client, member: Any
) -> None:
    owner_client.post("/wallet/", {"scope": "household", "period": "month", "limit_sat": "5000"})
    owner_client.post("/wallet/", {"scope": "member", "member": member.pk, "period": "day",
                                   "limit_sat": "100"})  # fmt: skip
    owner_client.post("/wallet/", {"scope": "request", "limit_sat": "50"})
    refused = owner_client.post(
        "/wallet/", {"scope": "household", "period": "month", "limit_sat": "lots"}, follow=True
    )

    assert "whole number of sats" in refused.content.decode()
    assert sorted(Budget.objects.values_list("scope", "period", "limit_msat")) == [
        ("household", "month", 5_000_000), ("member", "day", 100_000), ("request", "each", 50_000)
    ]  # fmt: skip
    assert Budget.objects.get(scope="member").member == member
