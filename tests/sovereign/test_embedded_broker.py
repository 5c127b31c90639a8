"""The embedded broker writes each message whole: a worker taking the queue's files at any
moment never finds half a message (kombu's own transport let it read an empty one, which
killed the worker and lost the message)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from sovereign import embedded_broker


def channel(folder: Path) -> Any:
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    connection = Connection("filesystem://", transport=embedded_broker.Transport,
                            transport_options=options)  # fmt: skip
    return connection.channel()


def test_while_a_message_is_written_no_queue_can_take_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = channel(tmp_path)
    seen_while_writing: list[list[str]] = []

    def dumps_and_look(payload: Any) -> str:
        seen_while_writing.append(
            [name for name in (p.name for p in tmp_path.iterdir()) if name.endswith(".celery.msg")
             and name.partition(".")[2] == "celery.msg"]
        )  # fmt: skip
        return '{"body": "whole"}'

    monkeypatch.setattr(embedded_broker, "dumps", dumps_and_look)
    broker._put("celery", {"body": "whole"})

    assert seen_while_writing == [[]]  # while writing, nothing a reader would take
    assert broker._get("celery") == {"body": "whole"}
    assert list(tmp_path.iterdir()) == []


def test_a_message_taken_is_the_one_put(tmp_path: Path) -> None:
    broker = channel(tmp_path)

    broker._put("celery", {"body": "one"})
    broker._put("celery", {"body": "two"})

    assert {broker._get("celery")["body"], broker._get("celery")["body"]} == {"one", "two"}
