"""An agent's paid HTTP step: GET a URL, and on a 402 pay its L402 challenge once under the
step's purpose, through the wallet as the task's caller, then ask again with the token. Against
an Aperture-shaped server on loopback, paid over a channel between two lightningd doubles."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.agents import execution
from apps.agents.models import Step
from apps.audit.models import AuditEvent
from apps.privacy.models import Egress
from apps.providers import paid_http
from apps.providers.paid_http import PaidHttpFailed, paid_get
from apps.wallet import budgets
from apps.wallet import services as wallet
from apps.wallet.models import Payment
from tests.agents.conftest import task_for
from tests.lightningd import LightningdDouble
from tests.providers.doubles.l402 import L402Double
from tests.providers.doubles.mpp import MPPDouble
from tests.providers.doubles.openai_shape import Handler, Route
from tests.providers.paid import payments

PRICE = 20_000
PAYER = "agent:7"
PURPOSE = "http:agent-7-step-1"
REPORT = "the weather report: sunny"


class PaidPages(L402Double):
    """The L402 double, serving plain GET pages: `/report` behind a 402 (its token checked as
    the chat's is), `/free` free, `/huge` 2 MiB, `/broken` a 500."""

    name = "pages"

    def extra_routes(self) -> dict[tuple[str, str], Route]:
        return {
            **super().extra_routes(),
            ("GET", "/report"): self._report,
            ("GET", "/free"): lambda handler, body: _text(handler, 200, "free words"),
            ("GET", "/huge"): lambda handler, body: _text(handler, 200, "x" * (2 << 20)),
            ("GET", "/broken"): lambda handler, body: _text(handler, 500, "down"),
        }

    def _report(self, handler: Handler, body: dict[str, Any]) -> None:
        refusal = self.refusal(handler, {})
        if refusal is not None:
            handler.send_json(refusal.status, refusal.body, refusal.headers)
            return
        _text(handler, 200, REPORT)


class ChargedPages(MPPDouble):
    """The MPP double, its `/report` page behind a Lightning charge: every read pays."""

    name = "charged"

    def extra_routes(self) -> dict[tuple[str, str], Route]:
        return {("GET", "/report"): self._report}

    def _report(self, handler: Handler, body: dict[str, Any]) -> None:
        refusal = self.refusal(handler, {})
        if refusal is not None:
            handler.send_json(refusal.status, refusal.body, refusal.headers, refusal.content_type)
            return
        _text(handler, 200, REPORT)


def _text(handler: Handler, status: int, text: str) -> None:
    raw = text.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


@pytest.fixture
def pages(provider_node: LightningdDouble, household_node: LightningdDouble) -> Iterator[PaidPages]:
    with PaidPages(provider_node, price_msat=PRICE) as double:
        yield double


def get(url: str, member: Any, purpose: str = PURPOSE, max_price_msat: int = PRICE) -> Any:
    return paid_get(url, purpose=purpose, payer=PAYER, member=member, max_price_msat=max_price_msat)


def paid_invoices(node: LightningdDouble) -> list[dict[str, Any]]:
    return [i for i in node.rpc.listinvoices()["invoices"] if i["status"] == "paid"]


def refused(url: str, member: Any, **kwargs: Any) -> PaidHttpFailed:
    with pytest.raises(PaidHttpFailed) as failed:
        get(url, member, **kwargs)
    return failed.value


@pytest.mark.django_db(transaction=True)
def test_a_free_page_is_read_and_nothing_is_paid(pages: PaidPages, member: Any) -> None:
    answer = get(f"{pages.url}/free", member)

    assert (answer.status, answer.text, answer.cost_msat) == (200, "free words", 0)
    assert payments() == [] and pages.challenges == 0
    row = Egress.objects.get()
    assert (row.url, row.origin, row.member_id, row.request_id) == (
        f"{pages.url}/free",
        "agent",
        member.pk,
        PURPOSE,
    )
    assert (row.outcome, row.cost_msat, row.body) == ("answered", 0, "")
    [audited] = AuditEvent.objects.filter(action="outside_request")
    assert audited.subject == "127.0.0.1" and audited.detail.startswith("answered, 0 msat")


@pytest.mark.django_db(transaction=True)
def test_a_402_is_paid_once_under_the_purpose_and_the_page_read_with_the_token(
    pages: PaidPages, member: Any, provider_node: LightningdDouble
) -> None:
    answer = get(f"{pages.url}/report", member)

    [payment] = payments()
    assert answer.text == REPORT and answer.status == 200
    assert (payment.purpose, payment.caller, payment.member_id, payment.state) == (
        PURPOSE,
        PAYER,
        member.pk,
        "complete",
    )
    assert payment.amount_msat == PRICE and payment.token_may_be_live
    assert answer.cost_msat == PRICE + (payment.fee_msat or 0)
    assert answer.payment_hash == payment.payment_hash
    assert pages.authorizations == [f"L402 {pages.offered[0]}:{payment.preimage}"]
    assert len(paid_invoices(provider_node)) == 1
    # The egress row keeps what left (the token) and what it cost, never the preimage.
    row = Egress.objects.get()
    kept = json.loads(row.body)
    assert (kept["authorization"], kept["token"]) == ("L402", pages.offered[0])
    assert payment.preimage not in row.body
    assert (row.outcome, row.cost_msat, row.payment_hash) == (
        "answered",
        answer.cost_msat,
        payment.payment_hash,
    )


@pytest.mark.django_db(transaction=True)
def test_running_again_with_the_same_purpose_reuses_the_payment_and_pays_nothing_more(
    pages: PaidPages, member: Any, provider_node: LightningdDouble
) -> None:
    first = get(f"{pages.url}/report", member)
    again = get(f"{pages.url}/report", member)

    [payment] = payments()
    assert first.text == again.text == REPORT
    assert again.cost_msat == first.cost_msat > 0
    assert pages.challenges == 1 and len(paid_invoices(provider_node)) == 1
    assert pages.authorizations == [f"L402 {pages.offered[0]}:{payment.preimage}"] * 2


@pytest.mark.django_db(transaction=True)
def test_a_crash_right_after_paying_leaves_what_the_next_run_needs_and_nothing_is_paid_again(
    pages: PaidPages, member: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(*args: Any) -> Any:
        raise SystemExit("the worker was killed right after paying")

    with monkeypatch.context() as patched:
        patched.setattr(paid_http, "_retried", killed)
        with pytest.raises(SystemExit):
            get(f"{pages.url}/report", member)
    assert Payment.objects.get().state == "complete" and pages.authorizations == []

    answer = get(f"{pages.url}/report", member)

    assert answer.text == REPORT and len(payments()) == 1 and pages.challenges == 1


@pytest.mark.django_db(transaction=True)
def test_an_unknown_outcome_is_pending_never_paid_again_and_used_once_settled(
    pages: PaidPages, member: Any, household_node: LightningdDouble
) -> None:
    household_node.faults.next_xpay("drop", paid=True)  # paid, but xpay's answer never came

    first = refused(f"{pages.url}/report", member)
    assert (first.code, first.unknown) == ("payment_pending", True)
    assert Payment.objects.get().state == "pending" and pages.authorizations == []

    deadline = time.monotonic() + 10
    while wallet.reconcile()["complete"] == 0:
        assert time.monotonic() < deadline, "the payment never settled"
        time.sleep(0.05)
    answer = get(f"{pages.url}/report", member)

    assert answer.text == REPORT and len(payments()) == 1 and pages.challenges == 1


@pytest.mark.django_db(transaction=True)
def test_another_invoice_for_a_purpose_already_paid_is_refused_by_the_wallet(
    pages: PaidPages, member: Any
) -> None:
    get(f"{pages.url}/report", member)
    Egress.objects.update(body="")  # the kept token is lost: the server offers a new invoice

    failed = refused(f"{pages.url}/report", member)

    # Paid once already: the new invoice is not paid, and the step says why (not a refusal).
    assert failed.code != "invoice_refused" and not failed.unknown
    assert "paid already and its answer was lost" in str(failed)
    assert len(payments()) == 1 and pages.challenges == 2


@pytest.mark.django_db(transaction=True)
def test_an_invoice_above_the_step_s_maximum_is_refused_before_anything_is_paid(
    pages: PaidPages, member: Any
) -> None:
    failed = refused(f"{pages.url}/report", member, max_price_msat=PRICE - 1)

    assert failed.code == "invoice_refused" and "more than" in str(failed)
    assert payments() == [] and pages.authorizations == []
    assert Egress.objects.get().outcome == "invoice_refused"


@pytest.mark.django_db(transaction=True)
def test_a_token_bound_to_another_payment_is_refused_unpaid(pages: PaidPages, member: Any) -> None:
    pages.switches["hash_mismatch"] = True

    failed = refused(f"{pages.url}/report", member)

    assert failed.code == "invoice_refused" and payments() == []


@pytest.mark.django_db(transaction=True)
def test_over_the_task_s_cap_nothing_is_paid(pages: PaidPages, member: Any) -> None:
    budgets.budget_set("caller", "total", PRICE - 1, caller=PAYER)

    failed = refused(f"{pages.url}/report", member)

    assert failed.code == "over_budget" and not failed.unknown
    assert not Payment.objects.exclude(state="failed").exists()
    assert pages.authorizations == [] and Egress.objects.get().body == ""


@pytest.mark.django_db(transaction=True)
def test_a_second_402_after_paying_fails_and_nothing_more_is_paid(
    pages: PaidPages, member: Any, provider_node: LightningdDouble
) -> None:
    pages.switches["again_402"] = True

    failed = refused(f"{pages.url}/report", member)

    assert failed.code == "provider_failed" and "again" in str(failed)
    assert len(payments()) == 1 and len(paid_invoices(provider_node)) == 1
    assert Egress.objects.get().cost_msat >= PRICE  # what was paid stays counted


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "url", ["ftp://example.org/report", "file:///etc/hostname", "report", "http:///nohost"]
)
def test_only_http_and_https_addresses_are_asked(url: str, member: Any) -> None:
    failed = refused(url, member)

    assert failed.code == "bad_request" and "nothing was sent" in str(failed)
    assert not Egress.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_answer_larger_than_the_bound_is_refused(pages: PaidPages, member: Any) -> None:
    failed = refused(f"{pages.url}/huge", member)

    assert failed.code == "provider_failed" and "larger than 1024 KiB" in str(failed)


@pytest.mark.django_db(transaction=True)
def test_an_error_status_fails_the_step(pages: PaidPages, member: Any) -> None:
    failed = refused(f"{pages.url}/broken", member)

    assert failed.code == "provider_failed" and "500" in str(failed)


@pytest.mark.django_db(transaction=True)
def test_without_the_household_s_node_nothing_is_paid(
    provider_node: LightningdDouble, member: Any, settings: Any, tmp_path: Path
) -> None:
    settings.LIGHTNING_RPC = str(tmp_path / "no-node" / "lightning-rpc")
    with PaidPages(provider_node, price_msat=PRICE) as pages:
        failed = refused(f"{pages.url}/report", member)

    assert failed.code == "wallet_unavailable" and payments() == []


@pytest.mark.django_db(transaction=True)
def test_an_mpp_charge_is_paid_once_and_answered_with_its_credential(
    provider_node: LightningdDouble, household_node: LightningdDouble, member: Any
) -> None:
    with ChargedPages(provider_node, price_msat=15_000) as charged:
        answer = get(f"{charged.url}/report", member)
        again = refused(f"{charged.url}/report", member)  # a charge answers one request

    [payment] = payments()
    assert answer.text == REPORT and answer.cost_msat == 15_000 + (payment.fee_msat or 0)
    assert (payment.purpose, payment.caller, payment.state) == (PURPOSE, PAYER, "complete")
    assert not payment.token_may_be_live
    # The second run sends the kept credential again; the charge is spent, so the server
    # offers a new one, which is not paid.
    assert charged.authorizations[0].startswith("Payment ")
    assert charged.authorizations == [charged.authorizations[0]] * 2
    assert again.code == "provider_failed" and "again" in str(again)
    assert len(payments()) == 1 and len(charged.offered) == 2
    kept = json.loads(Egress.objects.filter(body__gt="").first().body)  # type: ignore[union-attr]
    assert kept["challenge"] == charged.offered[0] and payment.preimage not in json.dumps(kept)


def http_step(member: Any, url: str, cap: int) -> Any:
    """A paid HTTP step of a member's task (its cap: the wallet's cap for the task's caller)."""
    task = task_for(member, cap=cap)
    return Step.objects.create(
        task=task,
        position=1,
        kind=Step.Kind.PAID_HTTP,
        url=url,
        prompt="Read the weather report.",
        estimated_cost_msat=PRICE,
        leaves_node=True,
        parallel_group=1,
    )


@pytest.mark.django_db(transaction=True)
def test_an_agent_s_paid_http_step_is_paid_as_its_task_and_keeps_the_receipt(
    pages: PaidPages, member: Any
) -> None:
    step = http_step(member, f"{pages.url}/report", cap=100_000)

    outcome = execution._http(step)

    [payment] = payments()
    assert outcome.done and outcome.result == REPORT
    assert (payment.caller, payment.member_id) == (step.task.caller, member.pk)
    assert outcome.cost_msat == PRICE + (payment.fee_msat or 0)
    [receipt] = outcome.provenance["receipts"]
    assert (receipt["payment_hash"], receipt["amount_msat"]) == (payment.payment_hash, PRICE)


@pytest.mark.django_db(transaction=True)
def test_an_agent_s_step_past_its_task_s_cap_pays_nothing(pages: PaidPages, member: Any) -> None:
    step = http_step(member, f"{pages.url}/report", cap=PRICE - 1)

    outcome = execution._http(step)

    assert not outcome.done and outcome.code == "over_budget" and not outcome.unknown
    assert not Payment.objects.exclude(state="failed").exists()
