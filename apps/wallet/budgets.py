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

from apps.audit.services import audit_record
from apps.wallet.models import AuditAction, Budget, Payment, SpendingLock


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
    """Where the current day, week (from Monday) or month began, in the node's time zone;
    None for a total, which never starts again."""
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
        return caller_scope(budget.caller)
    return Q()


def caller_scope(caller: str) -> Q:
    """The payments a caller's cap counts: those it made, and those made for it (an agent
    task's payments to a provider, whose caller is the provider)."""
    return Q(caller=caller) | Q(payer=caller)


_BUDGETS_SQL = (
    "SELECT id, scope, member_id, caller, period, limit_msat FROM wallet_budget "
    "WHERE scope IN ('household', 'request') OR (scope = 'caller' AND caller IN (%s, %s)) "
    "OR (scope = 'member' AND member_id = %s)"
)


def _budgets_for(caller: str, payer: str, member_id: int | None) -> list[Budget]:
    """Every budget a payment by `caller` (for `payer`, when it pays for someone) for this
    member must stay within: both callers' caps (a fixed query: every payment and every outside
    request reads it). A blank payer matches no cap (a cap always names its caller)."""
    return list(Budget.objects.raw(_BUDGETS_SQL, [caller, payer or caller, member_id]))


# What a row commits, as COMMITTED says, in SQL: the reservation's query is written once here
# rather than built by the ORM on every payment (1.5 ms of expression compiling per payment,
# most of the wallet's own time; see docs/benchmarks.md).
_COMMITTED_SQL = (
    "CASE WHEN state = 'pending' THEN amount_msat + max_fee_msat "
    "ELSE amount_msat + COALESCE(fee_msat, 0) END"
)
# Which other purpose holds the invoice, pending or paid (payment_hash is indexed).
_HOLDER = (
    "(SELECT {} FROM wallet_payment WHERE payment_hash = %s AND state != 'failed' "
    "AND purpose != %s LIMIT 1)"
)
_HOLDER_PURPOSE, _HOLDER_STATE = _HOLDER.format("purpose"), _HOLDER.format("state")


def _reservation_facts(
    periodic: list[Budget], payment_hash: str, purpose: str
) -> tuple[dict[int, int], tuple[str, str] | None]:
    """What is committed under each budget, and which other purpose holds this invoice (pending
    or paid), in one query. Only rows since the earliest period start are read (through the
    index on created_at): summing the whole journal made every payment slower than the last."""
    sums: list[str] = []
    params: list[Any] = []
    for budget in periodic:
        condition, values = _sql_scope(budget)
        sums.append(f"COALESCE(SUM(CASE WHEN {condition} THEN {_COMMITTED_SQL} END), 0)")
        params += values
    starts = [period_start(budget.period) for budget in periodic]
    since = min(starts) if starts and None not in starts else None  # type: ignore[type-var]
    params += [payment_hash, purpose, payment_hash, purpose]
    # Only fixed text is put together here; every value is a bound parameter.
    # COUNT(*) keeps it an aggregate, one row, when no periodic budget applies.
    columns = ", ".join([*sums, _HOLDER_PURPOSE, _HOLDER_STATE, "COUNT(*)"])
    sql = f"SELECT {columns} FROM wallet_payment WHERE state != 'failed'"  # noqa: S608
    if since is not None:
        sql += " AND created_at >= %s"
        params.append(connection.ops.adapt_datetimefield_value(since))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    totals = {budget.pk: int(row[n]) for n, budget in enumerate(periodic)}
    holder_purpose, holder_state = row[len(periodic)], row[len(periodic) + 1]
    return totals, None if holder_purpose is None else (holder_purpose, holder_state)


def _sql_scope(budget: Budget) -> tuple[str, list[Any]]:
    since = period_start(budget.period)
    conditions: list[str] = ["1 = 1"]
    values: list[Any] = []
    if since is not None:
        conditions.append("created_at >= %s")
        values.append(connection.ops.adapt_datetimefield_value(since))
    if budget.scope == Budget.Scope.MEMBER:
        conditions.append("member_id = %s")
        values.append(budget.member_id)
    elif budget.scope == Budget.Scope.CALLER:
        conditions.append("(caller = %s OR payer = %s)")
        values += [budget.caller, budget.caller]
    return " AND ".join(conditions), values


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
            f"The {budget.get_scope_display().lower()} of {budget.limit_msat} msat "
            f"{budget.period_shown} has {max(budget.limit_msat - spent, 0)} msat left; "
            f"this payment could cost {need} msat."
        )


def reserve(**payment: Any) -> Payment:
    """Check every budget that applies and write the pending payment, all or nothing.

    The invoice's own check sits in the same serialised transaction: the node pays an invoice
    once, so it may be pending or paid under one purpose only, however many payers race. So
    does the audit row: a refused payment leaves none, and a reserved one always has one."""
    need = payment["amount_msat"] + payment["max_fee_msat"]
    with transaction.atomic():
        _serialise()
        member = payment.get("member")
        applying = _budgets_for(
            payment["caller"], payment.get("payer", ""), member.pk if member else None
        )
        spent, taken = _reservation_facts(
            [b for b in applying if b.scope != Budget.Scope.REQUEST],
            payment["payment_hash"],
            payment["purpose"],
        )
        if taken is not None:
            raise InvoiceTaken(*taken)
        for budget in applying:
            _check(budget, need, spent.get(budget.pk, 0))
        reserved = Payment.objects.create(**payment)
        audit_record(
            AuditAction.PAYMENT_RESERVED,
            actor=reserved.caller,
            subject=reserved.purpose,
            detail=f"{reserved.audit_note}, fees up to {reserved.max_fee_msat} msat"
            + (f", for {reserved.payer}" if reserved.payer else ""),
        )
        return reserved


def _serialise() -> None:
    """Hold the one spending lock until the transaction ends (on SQLite, the IMMEDIATE
    transaction already holds the database's write lock), and make its commit durable.

    The pending row must be on disk before the node is asked to pay: SQLite's connections sync
    every commit (synchronous=FULL, in settings), and on PostgreSQL the commit waits for its
    WAL flush even where the server or role turned synchronous_commit off. Settling needs no
    such care: a lost update leaves the row pending, and reconciliation asks the node."""
    if connection.vendor == "sqlite":
        return
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = on")
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


def spendable(caller: str, member_id: int | None, payer: str = "") -> int | None:
    """The most a payment by `caller` (for `payer`) for this member could cost now, every
    budget that applies considered (amount and fee); None when no budget applies."""
    applying = _budgets_for(caller, payer, member_id)
    if not applying:
        return None
    periodic = [budget for budget in applying if budget.scope != Budget.Scope.REQUEST]
    spent, _ = _reservation_facts(periodic, "", "") if periodic else ({}, None)
    return min(budget.limit_msat - spent.get(budget.pk, 0) for budget in applying)


def remaining(budget: Budget) -> int:
    if budget.scope == Budget.Scope.REQUEST:
        return budget.limit_msat
    return budget.limit_msat - committed(_scope_of(budget), period_start(budget.period))
