"""The node side of bench/agents.py: run by it in a process of its own beside a running node,
with that node's settings and database, and printing one line of JSON with every time taken.

Approvals (each round: the dashboard, a DM code redeemed, a DM reply from the owner's phone)
and steps run through the worker or called directly (a free HTTP request, a model call) take
turns, so that all see the machine alike. Times come from the audit rows the node writes as a
step moves, never from how often the bench looks.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 30))
POLICY = {"approval_threshold_msat": 10_000, "step_up_threshold_msat": 50_000}
ABOVE_THRESHOLD_MSAT = 20_000  # needs a person's approval, not a fresh login signature
# SmolLM2 greets back with nearly the same short sentence every time: the step's work stays
# the same from run to run, and short.
PROMPT = "Hi"
POLL = 0.02  # seconds between looks at the database while waiting (never what is timed)
Times = dict[str, list[float]]
Split = tuple[float, float, str]  # to the step's start, to done (ms), and its answer
T = TypeVar("T")


def measure() -> Times:
    import django

    django.setup()
    from apps.identity.models import Member, Role

    owner = Member.objects.get(role=Role.OWNER)
    server = FreePage()
    phone = Phone(os.environ["BENCH_OWNER_SECRET"])
    approvals: dict[str, Callable[[Any], float]] = {
        "dashboard": dashboard_approval,
        "dm_code": dm_code_approval,
        "dm_reply": lambda owner: dm_reply_approval(owner, phone),
    }
    kinds: dict[str, Callable[[Any], Any]] = {
        "http": lambda owner: _http_step(owner, server.url),
        "model": _model_step,
    }
    paths: dict[str, Callable[[Any], Split | None]] = {
        "worker": through_worker,
        "direct": called_directly,
    }
    times: Times = {}
    answers: set[str] = set()
    for round_number in range(ROUNDS + 1):  # the first warms the engine and the worker up
        for name, approve in approvals.items():
            taken = approve(owner)
            if round_number:
                times.setdefault(name, []).append(taken)
        for kind, make_step in kinds.items():
            for path, run in paths.items():
                while (split := run(make_step(owner))) is None:
                    pass  # the worker's beat took the step first: not this path, again
                to_start, to_done, answer = split
                if round_number:
                    times.setdefault(f"{kind}_{path}_to_start", []).append(to_start)
                    times.setdefault(f"{kind}_{path}_total", []).append(to_done)
                    if kind == "model":
                        answers.add(answer)
    phone.close()
    server.close()
    # Only how many differ, never the text: answers stay out of logs and reports.
    return {**times, "distinct_answers": [float(len(answers))]}


# --- waiting for the node ---------------------------------------------------------------------


def _wait(condition: Callable[[], T | None], what: str, timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(POLL)
    raise SystemExit(f"Timed out after {timeout} s waiting for {what}.")


def _moved_at(step: Any, target: str) -> float:
    """When the worker (or the bench) moved the step to `target`: its audit row's time."""
    from apps.agents.models import AuditAction
    from apps.audit.models import AuditEvent

    rows = AuditEvent.objects.filter(
        action=AuditAction.STEP_MOVED, subject=step.purpose, detail__endswith=f"→ {target}"
    )
    at = _wait(lambda: rows.values_list("at", flat=True).first(), f"the step to be {target}")
    return float(at.timestamp())


def _task_done(task_id: int) -> None:
    """Wait for the task to end (the worker idle again before the next round), done."""
    from apps.agents.models import Task
    from apps.agents.states import TASK_FINAL, TaskState

    ended = Task.objects.filter(pk=task_id, state__in=TASK_FINAL)
    state = _wait(lambda: ended.values_list("state", flat=True).first(), "the task to end")
    if state != TaskState.DONE:
        failure = Task.objects.values_list("failure", flat=True).get(pk=task_id)
        raise SystemExit(f"Task {task_id} ended {state}: {failure}")


# --- approval to step start -------------------------------------------------------------------


def _waiting_step(owner: Any) -> Any:
    """A task's one step held by the worker for a person: estimated above the threshold. The
    plan comes from the private-rewrite template; its step's prompt and estimate are set by
    the bench before the plan is approved (a local step's estimate is 0 in a template)."""
    from apps.agents import services
    from apps.agents.models import Step
    from apps.agents.states import StepState
    from apps.inference.services import BUNDLED_NAME

    task = services.task_create(owner, PROMPT, 100_000, POLICY)
    (step,) = services.plan_from_template(task, "private_rewrite", local_model=BUNDLED_NAME)
    Step.objects.filter(pk=step.pk).update(prompt=PROMPT, estimated_cost_msat=ABOVE_THRESHOLD_MSAT)
    task.refresh_from_db()
    services.plan_approve(task, owner, "dashboard", digest=services.plan_digest(task))
    waiting = Step.objects.filter(pk=step.pk, state=StepState.AWAITING_APPROVAL)
    _wait(waiting.exists, "the worker to hold the step for approval")
    return Step.objects.select_related("task").get(pk=step.pk)


def _started_since(step: Any, since: float) -> float:
    started = _moved_at(step, "running")
    _task_done(step.task_id)
    return (started - since) * 1000


def dashboard_approval(owner: Any) -> float:
    """As the dashboard's view does when the owner presses Approve."""
    from apps.agents import approvals

    step = _waiting_step(owner)
    approved = time.time()
    approvals.step_approve(step, owner, "dashboard")
    return _started_since(step, approved)


def dm_code_approval(owner: Any) -> float:
    """As the DM inbox does with a reply holding a code: the node's side of a DM approval."""
    from apps.agents import approvals

    step = _waiting_step(owner)
    code = approvals.code_issue(step, owner)
    redeemed = time.time()
    if approvals.code_redeem(owner.pubkey, code) is None:
        raise SystemExit("The owner's own code was refused.")
    return _started_since(step, redeemed)


def dm_reply_approval(owner: Any, phone: Phone) -> float:
    """The whole DM path: the node DMs the owner a code; the owner's reply, from the moment it
    is sent to the relay, until the step starts (the node reads its inbox on a schedule)."""
    step = _waiting_step(owner)
    code = phone.code_for(step.task_id)
    sent = phone.reply(code)
    return _started_since(step, sent)


class Phone:
    """The owner's Nostr client on the node's relay, on a thread and loop of its own: reads
    the node's DMs and replies to them, gift-wrapped as a NIP-17 app does."""

    def __init__(self, secret_hex: str) -> None:
        from django.conf import settings
        from nostr_sdk import Keys

        from apps.identity.services import node_keys

        self.keys = Keys.parse(secret_hex)
        self.node = node_keys().public_key()
        self.opened: dict[str, str] = {}  # wrap id: the message's text
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.client = self._run(self._connect(settings.NOSTR_RELAYS))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    async def _connect(self, urls: list[str]) -> Any:
        from nostr_sdk import Client, RelayUrl

        client = Client()
        for url in urls:
            await client.add_relay(RelayUrl.parse(url))
        await client.connect(timedelta(seconds=5))
        return client

    def code_for(self, task_id: int) -> str:
        """The code in the node's DM about this task, once it has come."""
        about = re.compile(rf"^Sovereign: task {task_id} .*^Code: (\w+)$", re.DOTALL | re.M)

        def found() -> str | None:
            self._read()
            matches = (about.search(text) for text in self.opened.values())
            return next((match.group(1) for match in matches if match), None)

        return _wait(found, f"the node's DM about task {task_id}", timeout=60)

    def _read(self) -> None:
        from nostr_sdk import Filter, Kind, ReqTarget, UnwrappedGift

        wanted = Filter().kind(Kind(1059)).pubkey(self.keys.public_key())
        target = ReqTarget.auto([wanted])
        wraps = self._run(self.client.fetch_events(target, timedelta(seconds=5)))
        for wrap in list(wraps):
            wrap_id = wrap.id().to_hex()
            if wrap_id not in self.opened:
                rumor = UnwrappedGift.from_gift_wrap(self.keys, wrap).rumor()
                self.opened[wrap_id] = rumor.content()

    def reply(self, text: str) -> float:
        """Send `text` to the node; the moment it was sent."""
        from nostr_sdk import EventBuilder, Kind, Tag, nip59_make_gift_wrap

        rumor = (
            EventBuilder(Kind(14), text)
            .tags([Tag.public_key(self.node)])
            .finalize_unsigned(self.keys.public_key())
            .ensure_id()
        )
        wrap = nip59_make_gift_wrap(self.keys, self.node, rumor)
        sent = time.time()
        output = self._run(self.client.send_event(wrap))
        if not output.success:
            raise SystemExit(f"The relay refused the reply: {output.failed}")
        return sent

    def close(self) -> None:
        self._run(self.client.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)


# --- a step through the worker, and called directly --------------------------------------------


def _running_task(owner: Any) -> Any:
    """A running task nothing has sent to the worker yet: its rows are written by the bench,
    so that the bench alone decides who runs its step."""
    from apps.agents import services
    from apps.agents.models import Task
    from apps.agents.states import TaskState

    task = services.task_create(owner, PROMPT, 100_000, POLICY)
    Task.objects.filter(pk=task.pk).update(state=TaskState.RUNNING)
    return task


def _model_step(owner: Any) -> Any:
    """A local model call (nothing leaves, no cost: nobody's approval needed)."""
    from apps.agents.models import Step
    from apps.inference.services import BUNDLED_NAME

    step = Step.objects.create(
        task=_running_task(owner),
        position=1,
        kind=Step.Kind.MODEL_CALL,
        model=BUNDLED_NAME,
        prompt=PROMPT,
        parallel_group=1,
    )
    return Step.objects.select_related("task").get(pk=step.pk)


def _http_step(owner: Any, url: str) -> Any:
    """A paid HTTP request to a page that asks for no payment, approved by the owner (a
    request leaves the node) as the dashboard records it."""
    from apps.agents.models import Approval, Step
    from apps.agents.states import StepState

    task = _running_task(owner)
    step = Step.objects.create(
        task=task,
        position=1,
        kind=Step.Kind.PAID_HTTP,
        url=url,
        prompt="Read the page.",
        leaves_node=True,
        parallel_group=1,
        state=StepState.APPROVED,
    )
    Approval.objects.create(
        task=task, step=step, released="step", approved=True, by=owner, how="dashboard"
    )
    return Step.objects.select_related("task").get(pk=step.pk)


def through_worker(step: Any) -> Split | None:
    from apps.agents import tasks

    sent = time.time()
    tasks.step_run.delay(step.pk)
    return _split(step, sent)


def called_directly(step: Any) -> Split | None:
    from apps.agents import execution

    called = time.time()
    if not execution.step_run(step.pk):
        # The worker's beat (agents.resume) looked at the running task first.
        _task_done(step.task_id)
        return None
    return _split(step, called)


def _split(step: Any, began: float) -> Split:
    """From `began` to the step's start, and to its end, in milliseconds; and its answer."""
    from apps.agents.models import Step

    started, done = _moved_at(step, "running"), _moved_at(step, "done")
    _task_done(step.task_id)
    answer = Step.objects.values_list("result", flat=True).get(pk=step.pk)
    return (started - began) * 1000, (done - began) * 1000, answer


class FreePage:
    """A loopback HTTP server whose page asks for no payment: the smallest paid_http step."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/page"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    print(json.dumps(measure()))
