"""Budgets: what is committed is a sum over the journal, checked and reserved in one
serialised transaction, so concurrent payers can never pass a cap together.

A pending payment commits its amount plus its maximum fee; a complete one its amount plus the
fee it really cost; a failed one nothing. Settling a payment is therefore what releases the
unused part of its reservation.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, F, Q, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.wallet.models import Budget, Payment, SpendingLock


class OverBudget(Exception):
    """Paying would pass a budget; the message names which. Nothing was reserved."""


class InvoiceTaken(Exception):
    """The invoice is pending or paid under another purpose. Nothing was reserved."""

    def __init__(self, purpose: str, state: str) -> None:
        super().__init__(f"The invoice is {state} under the purpose {purpose!r}.")
        self.purpose = purpose
        self.state = state


COMMITTED = Case(
    When(state=Payment.State.PENDING, then=F("amount_msat") + F("max_fee_msat")),
    When(state=Payment.State.COMPLETE, then=F("amount_msat") + Coalesce(F("fee_msat"), 0)),
    default=Value(0),
    output_field=BigIntegerField(),
)


def period_start(period: str, now: datetime | None = None) -> datetime | None:
    """Where the current day, week (from Monday) or month began, in the node's time zone."""
    local = timezone.localtime(now or timezone.now())
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == Budget.Period.DAY:
        return midnight
    if period == Budget.Period.WEEK:
        return midnight - timedelta(days=midnight.weekday())
    if period == Budget.Period.MONTH:
        return midnight.replace(day=1)
    return None


def committed(scope: Q, since: datetime | None) -> int:
    payments = Payment.objects.filter(scope)
    if since is not None:
        payments = payments.filter(created_at__gte=since)
    return int(payments.aggregate(total=Coalesce(Sum(COMMITTED), 0))["total"])


def _scope_of(budget: Budget) -> Q:
    if budget.scope == Budget.Scope.MEMBER:
        return Q(member_id=budget.member_id)
    if budget.scope == Budget.Scope.CALLER:
        return Q(caller=budget.caller)
    return Q()


def _budgets_for(caller: str, member_id: int | None) -> list[Budget]:
    applies = Q(scope__in=[Budget.Scope.HOUSEHOLD, Budget.Scope.REQUEST]) | Q(
        scope=Budget.Scope.CALLER, caller=caller
    )
    if member_id is not None:
        applies |= Q(scope=Budget.Scope.MEMBER, member_id=member_id)
    return list(Budget.objects.filter(applies))


def _committed_under(periodic: list[Budget]) -> dict[int, int]:
    """What is committed under each budget, all in one query."""
    if not periodic:
        return {}
    sums = {}
    for budget in periodic:
        scope, since = _scope_of(budget), period_start(budget.period)
        within = scope & Q(created_at__gte=since) if since is not None else scope
        sums[f"b{budget.pk}"] = Coalesce(Sum(COMMITTED, filter=within), 0)
    totals = Payment.objects.aggregate(**sums)
    return {budget.pk: int(totals[f"b{budget.pk}"]) for budget in periodic}


def _check(budget: Budget, need: int, spent: int) -> None:
    if budget.scope == Budget.Scope.REQUEST:
        if need > budget.limit_msat:
            raise OverBudget(
                f"The price limit per payment is {budget.limit_msat} msat; this one could cost "
                f"{need} msat with its maximum fee."
            )
        return
    if spent + need > budget.limit_msat:
        raise OverBudget(
            f"The {budget.get_scope_display().lower()} of {budget.limit_msat} msat per "
            f"{budget.period} has {max(budget.limit_msat - spent, 0)} msat left; this payment "
            f"could cost {need} msat."
        )


def reserve(**payment: Any) -> Payment:
    """Check every budget that applies and write the pending payment, all or nothing.

    The invoice's own check sits in the same serialised transaction: the node pays an invoice
    once, so it may be pending or paid under one purpose only, however many payers race."""
    need = payment["amount_msat"] + payment["max_fee_msat"]
    with transaction.atomic():
        _serialise()
        taken = (
            Payment.objects.filter(payment_hash=payment["payment_hash"])
            .exclude(state=Payment.State.FAILED)
            .exclude(purpose=payment["purpose"])
            .values_list("purpose", "state")
            .first()
        )
        if taken is not None:
            raise InvoiceTaken(*taken)
        member = payment.get("member")
        applying = _budgets_for(payment["caller"], member.pk if member else None)
        spent = _committed_under([b for b in applying if b.scope != Budget.Scope.REQUEST])
        for budget in applying:
            _check(budget, need, spent.get(budget.pk, 0))
        return Payment.objects.create(**payment)


def _serialise() -> None:
    """Hold the one spending lock until the transaction ends (on SQLite, the IMMEDIATE
    transaction already holds the database's write lock)."""
    if connection.vendor == "sqlite":
        return
    if not SpendingLock.objects.select_for_update().filter(pk=1).exists():
        SpendingLock.objects.get_or_create(pk=1)
        SpendingLock.objects.select_for_update().get(pk=1)


def budget_set(scope: str, period: str, limit_msat: int, *, member: Any = None,
               caller: str = "") -> Budget:  # fmt: skip
    if scope not in Budget.Scope.values or period not in Budget.Period.values:
        raise ValueError("Unknown budget scope or period.")
    if (period == Budget.Period.EACH) != (scope == Budget.Scope.REQUEST):
        raise ValueError("Only the price limit per payment is per payment; others need a period.")
    if limit_msat < 0:
        raise ValueError("A budget cannot be negative.")
    if (scope == Budget.Scope.MEMBER) != (member is not None):
        raise ValueError("A member's allowance needs the member, and only it does.")
    if (scope == Budget.Scope.CALLER) != bool(caller):
        raise ValueError("A caller's cap needs the caller's name, and only it does.")
    budget, _ = Budget.objects.update_or_create(
        scope=scope, member=member, caller=caller,
        defaults={"period": period, "limit_msat": limit_msat},
    )  # fmt: skip
    return budget


def remaining(budget: Budget) -> int:
    if budget.scope == Budget.Scope.REQUEST:
        return budget.limit_msat
    return budget.limit_msat - committed(_scope_of(budget), period_start(budget.period))
