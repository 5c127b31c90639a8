from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from apps.identity.access import owner_required
from apps.identity.models import Member, Role
from apps.wallet import budgets, ledger, services
from apps.wallet.models import Budget

LEDGER_ROWS = 200


@never_cache
@owner_required
def wallet_page(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            budget = _budget_from_form(request)
            messages.success(request, f"Saved: {budget.get_scope_display()}.")
        except ValueError as error:
            messages.error(request, str(error))
        return redirect("wallet:page")
    all_budgets = Budget.objects.select_related("member").order_by("scope", "caller")
    context = {
        "node": services.node_summary(),
        "budgets": [(budget, budgets.remaining(budget)) for budget in all_budgets],
        "entries": ledger.entries(limit=LEDGER_ROWS),
        "scopes": Budget.Scope.choices,
        "periods": Budget.Period.choices,
        "members": Member.objects.filter(role__in=[Role.OWNER, Role.MEMBER]).order_by("id"),
    }
    return render(request, "wallet/page.html", context)


def _budget_from_form(request: HttpRequest) -> Budget:
    scope = request.POST.get("scope", "")
    sats = request.POST.get("limit_sat", "").strip()
    if not sats.isdigit():
        raise ValueError("Give the limit as a whole number of sats.")
    member = None
    if scope == Budget.Scope.MEMBER:
        member = Member.objects.filter(pk=request.POST.get("member") or 0).first()
        if member is None:
            raise ValueError("Choose whose allowance this is.")
    caller = request.POST.get("caller", "").strip() if scope == Budget.Scope.CALLER else ""
    if scope == Budget.Scope.CALLER and not caller:
        raise ValueError("Name the caller the cap is for (for example provider:ppq).")
    period = Budget.Period.EACH if scope == Budget.Scope.REQUEST else request.POST.get("period", "")
    return budgets.budget_set(scope, period, int(sats) * 1000, member=member, caller=caller)


@owner_required
def ledger_csv(request: HttpRequest) -> HttpResponse:
    response = StreamingHttpResponse(ledger.csv_rows(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="sovereign-ledger.csv"'
    return response  # type: ignore[return-value]  # streamed, as a page of the dashboard
