"""`manage.py privacy terms add|remove|list`: the owner's list of the household's own words
(surnames, street, town, employer, school), kept out of every outside request; and
`manage.py privacy check`: what a text would look like when it leaves for an outside provider,
and what was taken out of it (kinds and counts, never the values).

`check` reads its text on standard input, so a private text never sits in the process list or
the shell's history; it sends nothing anywhere and records nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.identity.management.database import SHELL, database_ready
from apps.inference.backends.base import AnswerRefused, RefusalCode
from apps.privacy import policy, redaction
from apps.privacy.policy import PrivacyError

# As much as an outside request may hold: a longer text would not be sent at all.
MAX_CHECK_BYTES = redaction.MAX_CHECKED_CHARS
EXIT_STOPPED = 1


class Command(BaseCommand):
    help = (
        "Add, list or remove the household's own words kept out of outside requests; "
        "check what a text read on standard input would look like when it leaves."
    )
    # The text `check` reads; tests give their own instead of the process's standard input.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        self._add_terms_arguments(actions.add_parser("terms", help="the owner's list of words"))
        check = actions.add_parser(
            "check",
            help="read a text on standard input; print what would leave for an outside "
            "provider, then what was found (kinds and counts, never the values)",
        )
        check.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help='print one JSON object: {"leaves": TEXT, "found": {KIND: COUNT}}, '
            'or {"stopped": MESSAGE} when the text holds a secret that is never sent',
        )

    def _add_terms_arguments(self, terms: CommandParser) -> None:
        actions = terms.add_subparsers(dest="terms_action", required=True)
        add = actions.add_parser(
            "add", help="add words: matched in any case, Müller also as Mueller, with possessives"
        )
        add.add_argument("words", nargs="+", metavar="WORD", help="one word, or a few in quotes")
        actions.add_parser("list", help="the words on the list, one a line")
        remove = actions.add_parser("remove", help="take words off the list")
        remove.add_argument(
            "words", nargs="+", metavar="WORD", help="as `list` shows it, in any case"
        )

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        database_ready()
        if action == "terms":
            action = f"terms_{options['terms_action']}"
        try:
            getattr(self, f"_{action}")(**options)
        except PrivacyError as error:
            raise CommandError(str(error)) from None

    def _terms_add(self, words: list[str], **options: Any) -> None:
        added = policy.terms_add(words, actor=SHELL)
        self._words("Added:", added)
        self._words("Already on the list:", _others(words, added))

    def _terms_remove(self, words: list[str], **options: Any) -> None:
        removed = policy.terms_remove(words, actor=SHELL)
        self._words("Removed:", removed)
        self._words("Not on the list:", _others(words, removed))

    def _terms_list(self, **options: Any) -> None:
        words = policy.terms_list()
        if not words:
            self.stdout.write("No word on the list yet: `manage.py privacy terms add WORD ...`.")
        for word in words:
            self.stdout.write(word)

    def _words(self, heading: str, words: list[str]) -> None:
        if words:
            self.stdout.write(heading)
            for word in words:
                self.stdout.write(f"  {word}")

    def _check(self, as_json: bool, **options: Any) -> None:
        text = _text_read(options.get("stdin") or sys.stdin)
        try:
            leaving = redaction.outbound([{"role": "user", "content": text}], trusted=False)
        except AnswerRefused as refusal:
            if refusal.code != RefusalCode.SECRET_IN_REQUEST:
                raise CommandError(str(refusal)) from None
            if not as_json:
                raise CommandError(str(refusal), returncode=EXIT_STOPPED) from None
            self.stdout.write(json.dumps({"stopped": str(refusal)}))
            raise SystemExit(EXIT_STOPPED) from None
        leaves = leaving.messages[0]["content"]
        if as_json:
            self.stdout.write(json.dumps({"leaves": leaves, "found": leaving.found}))
            return
        self.stdout.write(leaves)
        found = ", ".join(f"{kind} {count}" for kind, count in leaving.found.items())
        self.stdout.write(f"found: {found or 'nothing'}")


def _others(given: Iterable[str], done: list[str]) -> list[str]:
    """The words given that were not added (or removed), spaces tidied, each once."""
    done_folded = {word.casefold() for word in done}
    tidied = dict.fromkeys(" ".join(word.split()) for word in given)
    return [word for word in tidied if word.casefold() not in done_folded]


def _text_read(stream: IO[Any] | None) -> str:
    """At most MAX_CHECK_BYTES of text; bytes that are not UTF-8 become U+FFFD, not an error."""
    if stream is None:
        raise CommandError("Give the text on standard input: `... | manage.py privacy check`.")
    source = getattr(stream, "buffer", stream)
    read: bytes | str = source.read(MAX_CHECK_BYTES + 1)
    data = read.encode("utf-8", errors="replace") if isinstance(read, str) else read
    if len(data) > MAX_CHECK_BYTES:
        raise CommandError(f"The text is longer than {MAX_CHECK_BYTES:,} bytes: check it in parts.")
    return data.decode("utf-8", errors="replace")
