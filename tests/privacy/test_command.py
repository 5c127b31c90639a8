"""`manage.py privacy terms add|remove|list` keeps the owner's list from a shell, and
`manage.py privacy check` shows what a text read on standard input would look like when it
leaves for an outside provider, and what was found: kinds and counts, never the values."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.audit.models import AuditEvent
from apps.identity.models import Member
from apps.privacy import policy
from apps.privacy.management.commands.privacy import MAX_CHECK_BYTES
from apps.privacy.models import Egress
from tests.instances import ROOT, Instance

pytestmark = pytest.mark.django_db

SEED_12 = " ".join(["abandon"] * 11 + ["about"])
PRIVATE = "Dear Frau Mueller, write to anna@example.org or +49 170 1234567, or 0170 7654321."
LEAVES = "Dear Frau [TERM_1], write to [EMAIL_1] or [PHONE_1], or [PHONE_2]."


def privacy(*argv: str, stdin: bytes | None = None) -> str:
    """What `manage.py privacy ...` printed; a CommandError is raised as the shell shows it."""
    out = io.StringIO()
    given = {} if stdin is None else {"stdin": io.BytesIO(stdin)}
    call_command("privacy", *argv, stdout=out, stderr=io.StringIO(), **given)
    return out.getvalue()


def refused(*argv: str, stdin: bytes | None = None) -> str:
    with pytest.raises(CommandError) as error:
        privacy(*argv, stdin=stdin)
    assert error.value.returncode == 1
    return str(error.value)


# --- terms -----------------------------------------------------------------------------------


def test_add_prints_what_was_added_and_what_was_already_there() -> None:
    privacy("terms", "add", "Müller")

    printed = privacy("terms", "add", "  Anna   Müller ", "müller", "Hauptstraße", "Anna Müller")

    assert printed == "Added:\n  Anna Müller\n  Hauptstraße\nAlready on the list:\n  müller\n"
    assert policy.terms_list() == ["Anna Müller", "Hauptstraße", "Müller"]
    events = AuditEvent.objects.filter(action="privacy_terms_added").order_by("id")
    assert [(e.actor, e.detail) for e in events] == [("shell", "1 word(s)"), ("shell", "2 word(s)")]


@pytest.mark.parametrize(
    ("word", "refusal"),
    [("x", "A word must have at least 2 letters."), ("y" * 101, "at most 100 characters")],
)
def test_a_word_too_short_or_too_long_is_refused_and_nothing_changes(
    word: str, refusal: str
) -> None:
    assert refusal in refused("terms", "add", "Müller", word, "Weber")

    assert policy.terms_list() == []
    assert not AuditEvent.objects.filter(action="privacy_terms_added").exists()


def test_remove_prints_what_was_removed_and_what_was_not_on_the_list() -> None:
    privacy("terms", "add", "Müller", "Hauptstraße")

    printed = privacy("terms", "remove", "MÜLLER", "Weber")

    assert printed == "Removed:\n  Müller\nNot on the list:\n  Weber\n"
    assert privacy("terms", "list") == "Hauptstraße\n"
    (event,) = AuditEvent.objects.filter(action="privacy_terms_removed")
    assert (event.actor, event.detail) == ("shell", "1 word(s)")


def test_list_prints_one_word_a_line_or_how_to_add_one() -> None:
    assert privacy("terms", "list") == (
        "No word on the list yet: `manage.py privacy terms add WORD ...`.\n"
    )

    privacy("terms", "add", "Zeppelinschule", "St. Mary", "Acme GmbH")

    assert privacy("terms", "list") == "Acme GmbH\nSt. Mary\nZeppelinschule\n"


def test_terms_need_an_action_and_words() -> None:
    assert "invalid choice" in refused("terms", "rename")
    assert "the following arguments are required: WORD" in refused("terms", "add")


# --- check -----------------------------------------------------------------------------------


def test_check_prints_what_would_leave_then_the_kinds_found(owner: Member) -> None:
    privacy("terms", "add", "Müller")

    printed = privacy("check", stdin=PRIVATE.encode())

    assert printed == f"{LEAVES}\nfound: email 1, phone 2, term 1\n"


def test_check_uses_the_members_names_and_the_detectors_the_owner_left_on(owner: Member) -> None:
    Member.objects.filter(pk=owner.pk).update(profile_names=["Olivia"])
    policy.settings_update(actor=owner, detectors=["email", "name", "term"], retention_days=90)

    printed = privacy("check", stdin=b"Olivia's number: +49 170 1234567")

    assert printed == "[NAME_1] number: +49 170 1234567\nfound: name 1\n"


def test_check_of_text_with_nothing_private_prints_it_as_it_is() -> None:
    printed = privacy("check", stdin=b"How long do I boil an egg?\n")

    assert printed == "How long do I boil an egg?\nfound: nothing\n"


def test_check_as_json_is_one_object() -> None:
    privacy("terms", "add", "Müller")

    printed = privacy("check", "--json", stdin=PRIVATE.encode())

    assert json.loads(printed) == {"leaves": LEAVES, "found": {"email": 1, "phone": 2, "term": 1}}
    assert printed.count("\n") == 1


def test_check_refuses_a_seed_phrase_naming_what_not_the_words() -> None:
    message = refused("check", stdin=f"My wallet: {SEED_12}".encode())

    assert message == (
        "Not sent: the message contains a wallet seed phrase (BIP-39 words). "
        "Remove it and send again."
    )


def test_check_as_json_says_it_was_stopped_and_exits_1() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit:
        call_command("privacy", "check", "--json", stdin=io.BytesIO(SEED_12.encode()), stdout=out)

    assert exit.value.code == 1
    stopped = json.loads(out.getvalue())
    assert list(stopped) == ["stopped"] and "seed phrase" in stopped["stopped"]
    assert "abandon" not in out.getvalue()


def test_check_reads_bytes_that_are_not_utf8_without_failing() -> None:
    text = b"\xff\xfe\x00 mail anna@example.org \xc3\x28 caf\xc3\xa9 \x80"

    printed = privacy("check", stdin=text)

    assert printed == "\ufffd\ufffd\x00 mail [EMAIL_1] \ufffd( café \ufffd\nfound: email 1\n"


def test_check_takes_as_much_as_may_leave_and_refuses_more() -> None:
    line = b"Write to anna@example.org about the garden.\n"
    text = line * (MAX_CHECK_BYTES // len(line))
    text += b"x" * (MAX_CHECK_BYTES - len(text))

    found = json.loads(privacy("check", "--json", stdin=text))["found"]
    message = refused("check", stdin=text + b"x")

    assert found == {"email": MAX_CHECK_BYTES // len(line)}
    assert message == "The text is longer than 400,000 bytes: check it in parts."


def test_check_sends_nothing_and_records_nothing(owner: Member) -> None:
    before = AuditEvent.objects.count()

    privacy("check", stdin=PRIVATE.encode())
    refused("check", stdin=SEED_12.encode())

    assert AuditEvent.objects.count() == before
    assert not Egress.objects.exists()


# --- as a script runs it ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """A node's database, set up as `make run` would, for `manage.py` run as a process."""
    instance = Instance(tmp_path_factory.mktemp("node"))
    migrated = instance.manage("migrate", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr
    yield instance


def check_run(node: Instance, *argv: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "manage.py", "privacy", "check", *argv],
        cwd=ROOT, env=node.env, input=stdin, capture_output=True, timeout=60,
    )  # fmt: skip


def test_a_stopped_check_exits_1_with_the_message_on_stderr_only(node: Instance) -> None:
    run = check_run(node, stdin=f"{SEED_12}\n".encode())

    assert run.returncode == 1
    assert run.stdout == b""
    assert run.stderr.decode().strip() == (
        "CommandError: Not sent: the message contains a wallet seed phrase (BIP-39 words). "
        "Remove it and send again."
    )


def test_a_check_from_a_pipe_exits_0_and_prints_what_would_leave(node: Instance) -> None:
    added = node.manage("privacy", "terms", "add", "Müller")
    assert added.returncode == 0, added.stderr

    run = check_run(node, "--json", stdin=b"Herr M\xc3\xbcller \xff mail anna@example.org")

    assert (run.returncode, run.stderr) == (0, b"")
    assert json.loads(run.stdout) == {
        "leaves": "Herr [TERM_1] \ufffd mail [EMAIL_1]",
        "found": {"email": 1, "term": 1},
    }
