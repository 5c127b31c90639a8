"""The dashboard's forms for agent tasks: what a person typed, checked at the edge, in sats
(the services take millisatoshis)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms

from apps.agents.services import OutsidePick, Policy
from apps.agents.templates import PROPOSED, TEMPLATES
from apps.inference.pipeline import ModelChoice
from apps.providers import routing

MSAT_PER_SAT = 1000
DEFAULT_BUDGET_SAT = 1000
# Every paid step, and every step that sends data out, waits for the owner; above this each
# approval also needs a fresh signature.
DEFAULT_APPROVAL_THRESHOLD_SAT = 0
DEFAULT_STEP_UP_THRESHOLD_SAT = 1000
MOST_SAT = 100_000_000  # far above any household's budget: a typo, not a plan


@dataclass(frozen=True)
class Models:
    """The models a person may give a task: the node's, then the outside ones with prices."""

    local: list[ModelChoice]
    outside: list[ModelChoice]

    @classmethod
    def of(cls, choices: list[ModelChoice]) -> Models:
        # A route chooses its models itself: a plan names the model each step asks.
        outside = [c for c in choices if c.outside and c.owned_by != routing.PREFIX]
        return cls([c for c in choices if not c.outside], outside)

    def price_of(self, name: str) -> int:
        return next(choice.price_msat for choice in self.outside if choice.name == name)

    def provider_of(self, name: str) -> str:
        return next(choice.owned_by for choice in self.outside if choice.name == name)


class TaskForm(forms.Form):
    template = forms.ChoiceField(
        choices=[(t.name, t.title) for t in (*TEMPLATES.values(), PROPOSED)],
        widget=forms.RadioSelect,
    )
    goal = forms.CharField(widget=forms.Textarea, max_length=20_000, strip=True)
    budget_sat = forms.IntegerField(min_value=0, max_value=MOST_SAT, initial=DEFAULT_BUDGET_SAT)
    local_model = forms.ChoiceField()
    outside = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    result_by_dm = forms.BooleanField(required=False)
    approval_threshold_sat = forms.IntegerField(
        min_value=0, max_value=MOST_SAT, required=False, initial=DEFAULT_APPROVAL_THRESHOLD_SAT
    )
    step_up_threshold_sat = forms.IntegerField(
        min_value=0, max_value=MOST_SAT, required=False, initial=DEFAULT_STEP_UP_THRESHOLD_SAT
    )
    # The owner's only: addresses a planned task's paid HTTP requests may ask, one a line.
    urls = forms.CharField(widget=forms.Textarea, required=False, max_length=4000)

    def __init__(self, *args: Any, models: Models, may_set_thresholds: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.models = models
        self.may_set_thresholds = may_set_thresholds
        local_field: forms.ChoiceField = self.fields["local_model"]  # type: ignore[assignment]
        outside_field: forms.ChoiceField = self.fields["outside"]  # type: ignore[assignment]
        local_field.choices = [(c.name, c.name) for c in models.local]
        outside_field.choices = [(c.name, c.name) for c in models.outside]
        if models.local:
            self.fields["local_model"].initial = models.local[0].name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        name = data.get("template", "")
        template = PROPOSED if name == PROPOSED.name else TEMPLATES.get(name)
        if template is None:
            return data
        if template.outside_models < 0:
            pass  # a planned task may use any of the models ticked
        elif template.outside_models == 0:
            data["outside"] = []  # ticked for another template, then changed: not sent
        elif len(data.get("outside") or []) != template.outside_models:
            self.add_error(
                "outside", f"{template.title} needs {template.outside_models} outside models."
            )
        if not self.may_set_thresholds:
            data["approval_threshold_sat"] = DEFAULT_APPROVAL_THRESHOLD_SAT
            data["step_up_threshold_sat"] = DEFAULT_STEP_UP_THRESHOLD_SAT
        if not self.may_set_thresholds or name != PROPOSED.name:
            data["urls"] = ""
        return data

    def policy(self) -> Policy:
        data = self.cleaned_data
        picked = data["outside"]
        approval = data.get("approval_threshold_sat")
        step_up = data.get("step_up_threshold_sat")
        urls = tuple(line.strip() for line in data.get("urls", "").splitlines() if line.strip())
        planned = data["template"] == PROPOSED.name
        return Policy(
            approval_threshold_msat=MSAT_PER_SAT * _or(approval, DEFAULT_APPROVAL_THRESHOLD_SAT),
            step_up_threshold_msat=MSAT_PER_SAT * _or(step_up, DEFAULT_STEP_UP_THRESHOLD_SAT),
            data_may_leave=bool(picked or urls),
            # A planned task may use exactly the models ticked, and the local one.
            models=(data["local_model"], *picked) if planned else (),
            providers=tuple(sorted({self.models.provider_of(name) for name in picked})),
            urls=urls,
        )

    def outside_picks(self) -> list[OutsidePick]:
        return [
            OutsidePick(name, self.models.price_of(name)) for name in self.cleaned_data["outside"]
        ]


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


class StepApproveForm(forms.Form):
    leaving_digest = forms.RegexField(regex=r"^[0-9a-f]{64}$", required=False)
    rule_up_to_sat = forms.IntegerField(min_value=0, max_value=MOST_SAT, required=False)
    signed_event = forms.CharField(required=False, max_length=10_000)


class PlanEditForm(forms.Form):
    ACTIONS = ("remove", "up", "down", "model", "cost")

    action = forms.ChoiceField(choices=[(a, a) for a in ACTIONS])
    step = forms.IntegerField(min_value=1)
    model = forms.CharField(required=False, max_length=200)
    cost_sat = forms.IntegerField(min_value=0, max_value=MOST_SAT, required=False)
