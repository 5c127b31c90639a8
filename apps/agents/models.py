"""Agent tasks, their planned steps, and the approvals people give them.

A task is a goal someone asked for, with a budget cap (the wallet's caller cap for
`agent:<task id>`) and a policy. Its plan is a list of steps; nothing runs until a person
approves the plan, and a step over the policy's threshold, or one that sends data out, waits for
its own approval. Amounts are integers in millisatoshis, as in the wallet.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.agents.states import StepState, TaskState


class AuditAction(models.TextChoices):
    """What agents write to the audit trail (apps.audit), with the labels people read."""

    TASK_CREATED = "agent_task_created", "Agent task created"
    TASK_MOVED = "agent_task_moved", "Agent task changed state"
    STEP_MOVED = "agent_step_moved", "Agent step changed state"
    PLAN_MADE = "agent_plan_made", "Agent plan made"
    PLAN_EDITED = "agent_plan_edited", "Agent plan edited"
    PLAN_APPROVED = "agent_plan_approved", "Agent plan approved"
    PLAN_REJECTED = "agent_plan_rejected", "Agent plan rejected"
    STEP_APPROVED = "agent_step_approved", "Agent step approved"
    STEP_REJECTED = "agent_step_rejected", "Agent step rejected"
    RULE_ADDED = "agent_rule_added", "Agent approval rule added"
    CODE_ISSUED = "agent_code_issued", "Approval code issued"
    CODE_REFUSED = "agent_code_refused", "Approval code refused"


class Task(models.Model):
    goal = models.TextField()  # what the person wrote: never in logs or audit rows
    asked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    template = models.CharField(max_length=40, blank=True)
    budget_cap_msat = models.BigIntegerField()
    policy = models.JSONField()  # a Policy (services.py), validated when the task is created
    state = models.CharField(max_length=30, choices=TaskState.choices, default=TaskState.DRAFT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    result_text = models.TextField(blank=True)
    result_cost_msat = models.BigIntegerField(default=0)
    result_provenance = models.JSONField(default=dict, blank=True)  # models, providers, receipts
    failure = models.TextField(blank=True)  # why it failed, expired or was cancelled
    result_by_dm = models.BooleanField(default=False)  # the asker wants the result by Nostr DM

    def __str__(self) -> str:
        return f"agent task {self.pk} ({self.state})"

    @property
    def caller(self) -> str:
        """Who pays, in the wallet: the task's cap is this caller's cap."""
        return f"agent:{self.pk}"


class Step(models.Model):
    class Kind(models.TextChoices):
        MODEL_CALL = "model_call", "Model call"
        PAID_HTTP = "paid_http", "Paid HTTP request"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=12, choices=Kind.choices)
    model = models.CharField(max_length=200, blank=True)  # a local name or <provider>/<model>
    url = models.URLField(max_length=400, blank=True)  # a paid HTTP request's address
    prompt = models.TextField()  # the exact text the person approved
    takes_answers = models.BooleanField(default=False)  # earlier results follow the prompt
    estimated_cost_msat = models.BigIntegerField(default=0)  # the most this step may spend
    leaves_node = models.BooleanField(default=False)
    parallel_group = models.PositiveIntegerField()  # steps sharing a group may run together
    state = models.CharField(max_length=20, choices=StepState.choices, default=StepState.PLANNED)
    attempts = models.PositiveIntegerField(default=0)
    result = models.TextField(blank=True)  # untrusted data, never instructions
    cost_msat = models.BigIntegerField(default=0)
    # Who answered, what it cost, the payment's hash and proof: the step's receipt.
    provenance = models.JSONField(default=dict, blank=True)
    failure = models.TextField(blank=True)  # why it failed, for people
    # A running step is held by a worker until then; past it, the worker is taken for dead and
    # the step is run again (idempotently: its payment is keyed by the step).
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("task", "position")
        constraints = [
            models.UniqueConstraint(fields=("task", "position"), name="agents_step_position_once")
        ]

    def __str__(self) -> str:
        return f"step {self.position} of task {self.task_id} ({self.state})"

    @property
    def target(self) -> str:
        """The model or address this step calls: what an approval rule matches on."""
        return self.model if self.kind == self.Kind.MODEL_CALL else self.url

    @property
    def purpose(self) -> str:
        """The wallet purpose its payment is keyed by: the same step pays once."""
        return f"agent:{self.task_id}:step:{self.pk}"


class Approval(models.Model):
    """A person's decision, kept until the step it released has actually started."""

    class Released(models.TextChoices):
        PLAN = "plan", "The plan"
        STEP = "step", "A step"

    class How(models.TextChoices):
        DASHBOARD = "dashboard", "Dashboard"
        DM = "dm", "Nostr DM"
        SHELL = "shell", "Shell"
        RULE = "rule", "An approval rule"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="approvals")
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.CASCADE)
    released = models.CharField(max_length=4, choices=Released.choices)
    approved = models.BooleanField()  # False: a rejection, recorded the same way
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    how = models.CharField(max_length=10, choices=How.choices)
    rule = models.ForeignKey("ApprovalRule", null=True, blank=True, on_delete=models.SET_NULL)
    plan_digest = models.CharField(max_length=64, blank=True)  # the plan as it was approved
    # The digest of the privacy preview the approver saw (what would leave): the step sends
    # exactly that, or is refused (pipeline's `leaving_shown`).
    leaving_digest = models.CharField(max_length=64, blank=True)
    at = models.DateTimeField(auto_now_add=True)
    consumed_at = models.DateTimeField(null=True, blank=True)  # when what it released started

    def __str__(self) -> str:
        return f"{'approval' if self.approved else 'rejection'} of {self.released}"


class ApprovalRule(models.Model):
    """ "Steps like this one in this task up to N sats": same kind, same model or address,
    each costing at most `max_cost_msat`. Never wider than its task."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="rules")
    kind = models.CharField(max_length=12, choices=Step.Kind.choices)
    target = models.CharField(max_length=500)
    max_cost_msat = models.BigIntegerField()
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"rule on task {self.task_id}: {self.kind} {self.target} ≤ {self.max_cost_msat}"


class ApprovalCode(models.Model):
    """A short code sent to an approver by DM: single use, expiring, only its keyed hash kept."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="codes")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    code_hash = models.CharField(max_length=64, unique=True)
    # The digest of the privacy preview the DM described when the code was issued: approving
    # by this code lets the step send exactly that, or nothing ("": nothing leaves).
    leaving_digest = models.CharField(max_length=64, blank=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"approval code for step {self.step_id}"


class SeenMessage(models.Model):
    """A gift-wrapped DM to the node already read: a relay sending it again changes nothing."""

    wrap_id = models.CharField(max_length=64, unique=True)
    seen_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"seen DM {self.wrap_id[:12]}"


class Lease(models.Model):
    """A job only one worker does at a time (reading the node's DMs): whoever moved `until`
    into the future holds it until then, or until they give it back."""

    name = models.CharField(max_length=40, unique=True)
    holder = models.CharField(max_length=32, blank=True)
    until = models.DateTimeField()

    def __str__(self) -> str:
        return f"lease {self.name} until {self.until:%H:%M:%S}"
