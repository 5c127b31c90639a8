"""Approvals and results by Nostr DM (NIP-17), from the node's own key (the DM part)."""

from __future__ import annotations


def approval_request_send(step_id: int) -> None:
    """DM each owner a single-use code for this waiting step: task, step, cost, code."""


def inbox_read() -> int:
    """Read the DMs sent to the node since last time and redeem approval codes; how many
    replies were read."""
    return 0


def result_send(task_id: int) -> None:
    """DM the asker the task's result, cost and receipts (when they asked for it)."""
