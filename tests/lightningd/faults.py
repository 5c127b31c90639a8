"""Fault switches: make the next call misbehave the way a real node sometimes does.

Each switch acts on one call of one method, in the order they were set:

    double.faults.next_xpay("pending_then_complete", after=2)
    double.faults.next_call("listpays", "slow", seconds=3)

Payment faults (for the next `xpay` or `pay`):

- `pending_then_complete(after=1.0, reply="wait")`: the payment is in flight (`listpays` says
  `pending`, the HTLC is out) for `after` seconds, then completes.
- `failed_then_complete(pending_for=0.3, failed_for=1.0, reply="wait")`: the first attempt fails
  and for `failed_for` seconds nothing is in flight, so `listpays` says `failed` while xpay is
  still retrying; then a second part goes out and completes (lightning.md §4.4, CLN issue 9036).
- `held(reply="wait")`: the payment is in flight until the test says
  `double.release(payment_hash)` (`dev-double-release`), then completes: no clock to race.
- `already_paid()`: the payment goes through as if an earlier call had made it, and the call
  answers 219 "Already paid this invoice successfully" (the preimage is in `listpays`).
- `no_route()`: 205 "Failed: We could not find a usable set of paths. ...", nothing recorded.
- `expired(seconds_ago=1)`: 207 "Invoice expired N seconds ago", nothing recorded.
- `drop(paid=False)`: the connection closes after the request is read, without an answer;
  with `paid=True` the payment is made first.

For the timed faults and `held`, `reply` says when the caller hears back: `"wait"` (when the payment
completes, as xpay does), `"error"` (at once, with -4 "Plugin terminated before replying to RPC
call.", while the payment carries on) or `"drop"` (the connection closes at once, likewise).

Any method:

- `slow(seconds=1.0)`: the call is carried out, then the answer waits `seconds`.
- `drop()`: the connection closes after the request is read; nothing is done.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

PAYMENT_METHODS = ("xpay", "pay")
REPLIES = ("wait", "error", "drop")
PAYMENT_FAULTS: dict[str, dict[str, Any]] = {
    "pending_then_complete": {"after": 1.0, "reply": "wait"},
    "failed_then_complete": {"pending_for": 0.3, "failed_for": 1.0, "reply": "wait"},
    "held": {"reply": "wait"},
    "already_paid": {},
    "no_route": {},
    "expired": {"seconds_ago": 1},
    "drop": {"paid": False},
    "slow": {"seconds": 1.0},
}
ANY_METHOD_FAULTS: dict[str, dict[str, Any]] = {
    "drop": {},
    "slow": {"seconds": 1.0},
}


@dataclass(frozen=True)
class Fault:
    method: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def option(self, name: str) -> Any:
        return self.options[name]

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "fault": self.name, "options": dict(self.options)}


def make_fault(method: str, name: str, options: dict[str, Any]) -> Fault:
    """A fault with its defaults filled in, or ValueError naming what is wrong."""
    known = PAYMENT_FAULTS if method in PAYMENT_METHODS else ANY_METHOD_FAULTS
    if name not in known:
        raise ValueError(f"{method} has no fault {name!r}; choose from {sorted(known)}")
    unknown = set(options) - set(known[name])
    if unknown:
        raise ValueError(f"fault {name!r} takes {sorted(known[name])}, not {sorted(unknown)}")
    merged = {**known[name], **options}
    if merged.get("reply", "wait") not in REPLIES:
        raise ValueError(f"reply must be one of {REPLIES}")
    return Fault(method, name, merged)


class Faults:
    """The switches of one double; safe to set from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: list[Fault] = []

    def next_xpay(self, name: str, **options: Any) -> None:
        """The next `xpay` or `pay` call misbehaves."""
        self._add(make_fault("xpay", name, options))

    def next_call(self, method: str, name: str, **options: Any) -> None:
        """The next call of `method` misbehaves."""
        self._add(make_fault(method, name, options))

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()

    def queued(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.describe() for fault in self._queued]

    def take(self, method: str) -> Fault | None:
        """The switch for this call, if one is set; it is used up."""
        matches = PAYMENT_METHODS if method in PAYMENT_METHODS else (method,)
        with self._lock:
            for fault in self._queued:
                if fault.method in matches:
                    self._queued.remove(fault)
                    return fault
        return None

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._queued.append(fault)
