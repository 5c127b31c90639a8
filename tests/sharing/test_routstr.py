"""Routstr's flow on this node: an invoice from the household's node buys an `sk-` key whose
balance pays for answers of a local model on sale.

Real parts: the household's lightningd double (the seller's node) and a second one paying as
the stranger; the real engine on the bundled model. In this process through Django's client,
and (at the end) a running node spoken to by the official `openai` client.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from django.test import Client
from django.utils import timezone
from nostr_sdk import Keys

from apps.audit.models import AuditEvent
from apps.inference import pipeline
from apps.inference.answering import Sampling
from apps.inference.backends.base import Done
from apps.providers import sealing
from apps.providers.models import Credential, Provider, ProviderModel
from apps.sharing import keys
from apps.sharing.models import Balance, Credit, Listing, Offer, Sale
from apps.wallet.models import Invoice
from tests.inference.conftest import MODEL, RecordingDecoder, bundled_local_model, serving_engine
from tests.instances import Instance
from tests.lightningd import LightningdDouble

pytestmark = pytest.mark.django_db
PRICE_MSAT = 2_000  # per request
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SAMPLING = Sampling(max_tokens=8, temperature=0.0, top_p=1.0, seed=1)


@pytest.fixture
def seller_node(tmp_path: Path, settings: Any) -> Iterator[LightningdDouble]:
    """The household's node: its invoices are what strangers pay."""
    with LightningdDouble(tmp_path / "seller", alias="household") as node:
        settings.LIGHTNING_RPC = str(node.rpc_file)
        settings.SHARING_REQUESTS_PER_MINUTE = 1000
        yield node


@pytest.fixture
def payer(tmp_path: Path, seller_node: LightningdDouble) -> Iterator[LightningdDouble]:
    """The stranger's own node, with a channel to the household's."""
    with LightningdDouble(tmp_path / "payer", alias="stranger") as node:
        node.connect(seller_node, amount_sat=1_000_000)
        yield node


@pytest.fixture
def on_sale(owner: Any, seller_node: LightningdDouble) -> Offer:
    bundled_local_model()
    return Offer.objects.create(model=MODEL, price_msat=PRICE_MSAT)


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingDecoder]:
    with serving_engine(slots=2) as decoder:
        yield decoder


def stranger(key: str | None = None) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}") if key else Client()


def post(client: Client, path: str, body: Any) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json")


def invoice_made(sats: int, key: str | None = None) -> dict[str, Any]:
    body = {"amount_sats": sats, "purpose": "topup" if key else "create"}
    made = post(stranger(key), "/lightning/invoice", body)
    assert made.status_code == 200, made.content
    return made.json()  # type: ignore[no-any-return]


def status_of(invoice_id: str) -> dict[str, Any]:
    asked = stranger().get(f"/lightning/invoice/{invoice_id}/status")
    assert asked.status_code == 200, asked.content
    return asked.json()  # type: ignore[no-any-return]


def key_bought(payer: LightningdDouble, sats: int = 100) -> str:
    made = invoice_made(sats)
    payer.rpc.xpay(made["bolt11"])
    status = status_of(made["invoice_id"])
    assert status["status"] == "paid"
    return str(status["api_key"])


def balance_msat(key: str) -> int:
    info = stranger(key).get("/v1/balance/info")
    assert info.status_code == 200, info.content
    return int(info.json()["balance"])


def chat(key: str, **more: Any) -> Any:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0, **more}
    return post(stranger(key), "/v1/chat/completions", body)


# Buying a key ----------------------------------------------------------------------------


def test_an_invoice_in_routstrs_shape_comes_from_the_households_node(
    on_sale: Offer, seller_node: LightningdDouble
) -> None:
    made = invoice_made(21)

    assert set(made) == {"invoice_id", "bolt11", "amount_sats", "expires_at", "payment_hash"}
    decoded = seller_node.rpc.decode(made["bolt11"])
    assert decoded["payee"] == seller_node.node_id
    assert (decoded["amount_msat"], decoded["payment_hash"]) == (21_000, made["payment_hash"])
    assert made["amount_sats"] == 21 and made["expires_at"] > time.time() + 3000
    assert made["payment_hash"] not in made["invoice_id"]  # the id is not the public hash


def test_a_paid_invoice_gives_its_key_and_the_same_key_when_asked_again(
    on_sale: Offer, payer: LightningdDouble
) -> None:
    made = invoice_made(100)
    pending = status_of(made["invoice_id"])
    assert (pending["status"], pending["api_key"], pending["paid_at"]) == ("pending", None, None)

    payer.rpc.xpay(made["bolt11"])
    paid = status_of(made["invoice_id"])
    again = status_of(made["invoice_id"])

    assert paid["status"] == "paid" and paid["api_key"].startswith("sk-")
    assert again == paid and paid["amount_sats"] == 100 and paid["paid_at"] >= paid["created_at"]
    assert balance_msat(paid["api_key"]) == 100_000  # credited once, however often asked
    # The key is not kept: only its hash finds the balance.
    balance = Balance.objects.get(kind=Balance.Kind.KEY)
    assert balance.token_id == hashlib.sha256(paid["api_key"].encode()).hexdigest()
    assert paid["api_key"] not in json.dumps(list(Balance.objects.values()), default=str)
    assert AuditEvent.objects.filter(action="sharing_key_paid").count() == 1


def test_status_polls_racing_on_one_payment_audit_it_once(
    on_sale: Offer, payer: LightningdDouble
) -> None:
    made = invoice_made(100)
    payer.rpc.xpay(made["bolt11"])
    # One poll read the invoice before another credited it: it must not audit the payment too.
    stale = Invoice.objects.select_related("credit").get(payment_hash=made["payment_hash"])
    assert status_of(made["invoice_id"])["status"] == "paid"

    assert keys._status(stale).status == "paid"

    assert AuditEvent.objects.filter(action="sharing_key_paid").count() == 1
    assert balance_msat(str(status_of(made["invoice_id"])["api_key"])) == 100_000


def test_a_lost_status_answer_is_recovered_with_the_invoice(
    on_sale: Offer, payer: LightningdDouble
) -> None:
    made = invoice_made(50)
    payer.rpc.xpay(made["bolt11"])

    recovered = post(stranger(), "/lightning/recover", {"bolt11": made["bolt11"]})

    assert recovered.status_code == 200
    assert recovered.json() == status_of(made["invoice_id"])
    assert recovered.json()["status"] == "paid"
    unknown = post(stranger(), "/lightning/recover", {"bolt11": "lnbcrt1unknown"})
    assert unknown.status_code == 404


def test_while_the_node_does_not_answer_a_paid_invoice_is_pending_never_unpaid(
    on_sale: Offer, payer: LightningdDouble, seller_node: LightningdDouble
) -> None:
    made = invoice_made(30)
    payer.rpc.xpay(made["bolt11"])
    key = keys.key_for(made["payment_hash"])

    seller_node.faults.next_call("listinvoices", "drop")
    unknown = status_of(made["invoice_id"])
    seller_node.faults.next_call("listinvoices", "drop")
    not_now = chat(key)

    assert (unknown["status"], unknown["api_key"]) == ("pending", None)
    assert not_now.status_code == 503 and "ask again" in not_now.json()["error"]["message"]
    assert status_of(made["invoice_id"])["api_key"] == key  # the node answered: paid
    assert balance_msat(key) == 30_000


def test_a_failure_on_a_status_call_logs_no_invoice_id(
    on_sale: Offer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    made = invoice_made(10)

    def broken(balance: Balance) -> None:
        raise RuntimeError(f"broken for {made['invoice_id']}")

    monkeypatch.setattr(keys.balances, "credit_checked", broken)
    failed = stranger().get(f"/lightning/invoice/{made['invoice_id']}/status")

    assert failed.status_code == 500
    assert "invoice_status failed: RuntimeError" in caplog.text
    assert made["invoice_id"] not in caplog.text


def test_an_unknown_or_forged_invoice_id_is_404(on_sale: Offer) -> None:
    made = invoice_made(10)
    forged = made["invoice_id"][:-2] + ("AA" if not made["invoice_id"].endswith("AA") else "BB")

    for invoice_id in (forged, "nothing-here", "x" * 300):
        asked = stranger().get(f"/lightning/invoice/{invoice_id}/status")
        assert asked.status_code == 404 and asked.json() == {"detail": "Invoice not found"}


def test_nothing_is_invoiced_while_nothing_is_on_sale_or_for_a_wrong_amount(
    owner: Any, seller_node: LightningdDouble
) -> None:
    nothing = post(stranger(), "/lightning/invoice", {"amount_sats": 10, "purpose": "create"})
    assert nothing.status_code == 404

    Offer.objects.create(model=MODEL, price_msat=PRICE_MSAT)
    for amount in (0, -5, 1_000_001, "10", True, None):
        wrong = post(stranger(), "/lightning/invoice", {"amount_sats": amount})
        assert wrong.status_code == 422, amount
    assert seller_node.rpc.listinvoices()["invoices"] == []


def test_a_top_up_adds_to_the_keys_balance(on_sale: Offer, payer: LightningdDouble) -> None:
    key = key_bought(payer, 100)

    topup = invoice_made(40, key)
    assert status_of(topup["invoice_id"])["status"] == "pending"
    payer.rpc.xpay(topup["bolt11"])

    paid = status_of(topup["invoice_id"])
    assert (paid["status"], paid["api_key"]) == ("paid", None)  # a top-up never shows the key
    recovered = post(stranger(), "/lightning/recover", {"bolt11": topup["bolt11"]}).json()
    assert (recovered["status"], recovered["api_key"]) == ("paid", None)
    assert balance_msat(key) == 140_000
    older_path = post(
        stranger(key), "/v1/balance/lightning/invoice", {"amount_sats": 5, "purpose": "topup"}
    )
    assert older_path.status_code == 200 and older_path.json()["amount_sats"] == 5
    no_key = post(stranger(), "/lightning/invoice", {"amount_sats": 5, "purpose": "topup"})
    topup_body = {"amount_sats": 5, "purpose": "topup"}
    unknown = post(stranger("sk-" + "0" * 64), "/lightning/invoice", topup_body)
    assert (no_key.status_code, unknown.status_code) == (401, 404)


def test_an_expired_key_buys_nothing_until_a_top_up_renews_it(
    on_sale: Offer, payer: LightningdDouble, engine: RecordingDecoder
) -> None:
    key = key_bought(payer, 10)
    Balance.objects.update(expires_at=timezone.now() - timedelta(days=1))
    Credit.objects.update(credited_at=timezone.now() - timedelta(days=40))

    refused = chat(key)
    topup = invoice_made(5, key)
    payer.rpc.xpay(topup["bolt11"])
    assert status_of(topup["invoice_id"])["status"] == "paid"

    assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
    assert chat(key).status_code == 200
    assert balance_msat(key) == 15_000 - PRICE_MSAT
    assert Balance.objects.get().expires_at > timezone.now() + timedelta(days=29)


# Spending it -----------------------------------------------------------------------------


def test_the_key_buys_an_answer_and_pays_its_cost(
    on_sale: Offer, payer: LightningdDouble, engine: RecordingDecoder
) -> None:
    key = key_bought(payer, 10)

    answered = chat(key)

    assert answered.status_code == 200, answered.content
    assert answered.json()["choices"][0]["message"]["content"]
    assert answered["X-Routstr-Cost-Msats"] == str(PRICE_MSAT)
    assert balance_msat(key) == 10_000 - PRICE_MSAT
    sale = Sale.objects.get()
    assert (sale.model, sale.cost_msat) == (MODEL, PRICE_MSAT) and sale.completion_tokens > 0


def test_priced_per_1000_tokens_the_cost_is_split_into_prompt_and_answer(
    on_sale: Offer, payer: LightningdDouble, engine: RecordingDecoder
) -> None:
    Offer.objects.filter(pk=on_sale.pk).update(
        per_1k_tokens=True, price_msat=10_000, max_request_msat=5_000
    )
    key = key_bought(payer, 10)

    answered = chat(key)

    usage = answered.json()["usage"]
    expected = -(-usage["total_tokens"] * 10_000 // 1000)
    prompt_part = -(-usage["prompt_tokens"] * 10_000 // 1000)
    assert answered["X-Routstr-Cost-Msats"] == str(min(expected, 5_000))
    assert answered["X-Routstr-Input-Cost-Msats"] == str(min(prompt_part, 5_000))
    assert int(answered["X-Routstr-Input-Cost-Msats"]) + int(
        answered["X-Routstr-Output-Cost-Msats"]
    ) == int(answered["X-Routstr-Cost-Msats"])
    assert balance_msat(key) == 10_000 - int(answered["X-Routstr-Cost-Msats"])


def test_a_short_balance_is_a_402_in_routstrs_shape_with_no_challenge(
    on_sale: Offer, payer: LightningdDouble
) -> None:
    key = key_bought(payer, 1)  # 1,000 msat; an answer costs 2,000

    refused = chat(key)

    assert refused.status_code == 402 and "WWW-Authenticate" not in refused
    numbers = {"balance": 1_000, "required": PRICE_MSAT, "shortfall": 1_000}
    body = refused.json()
    assert body["details"] == numbers
    assert {name: body["detail"][name] for name in numbers} == numbers
    assert body["error"]["code"] == "insufficient_balance"
    assert balance_msat(key) == 1_000 and not Sale.objects.exists()


def test_a_key_whose_invoice_is_unpaid_gets_nothing(on_sale: Offer) -> None:
    made = invoice_made(100)
    key = keys.key_for(made["payment_hash"])  # the key it would buy, made with the root key

    assert chat(key).status_code == 401
    assert stranger(key).get("/v1/balance/info").status_code == 401
    assert status_of(made["invoice_id"])["api_key"] is None


def test_a_forged_or_unknown_key_is_401(on_sale: Offer, payer: LightningdDouble) -> None:
    key = key_bought(payer, 10)
    forged = key[:-4] + ("0000" if not key.endswith("0000") else "1111")

    for wrong in (forged, "sk-" + "a" * 64, "sk-short"):
        refused = chat(wrong)
        assert refused.status_code == 401, wrong
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert stranger(wrong).get("/v1/balance/info").status_code == 401
    assert balance_msat(key) == 10_000


def test_a_model_not_on_sale_is_404(on_sale: Offer, payer: LightningdDouble) -> None:
    key = key_bought(payer, 10)

    refused = chat(key, model="household-secret")

    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
    assert balance_msat(key) == 10_000


# Limits and the node's card --------------------------------------------------------------


def test_an_address_over_its_limit_is_429_and_audited(
    on_sale: Offer, payer: LightningdDouble, settings: Any
) -> None:
    settings.SHARING_REQUESTS_PER_MINUTE = 5
    key = key_bought(payer, 10)  # two requests: the invoice and its status
    answers = [stranger().get("/v1/info").status_code for _ in range(3)]

    limited = [stranger().get("/lightning/invoice/x/status"), chat(key)]

    assert answers == [200, 200, 200]
    assert [answer.status_code for answer in limited] == [429, 429]
    assert limited[0]["Retry-After"] == "60" and limited[1]["Retry-After"] == "60"
    # One action for every endpoint, one row a minute per address however many are refused.
    assert AuditEvent.objects.filter(action="sharing_limited").count() == 1


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    on_sale: Offer, payer: LightningdDouble, settings: Any
) -> None:
    key = key_bought(payer, 10)
    settings.SHARING_MAX_REQUEST_BYTES = 1024
    padding = "x" * 2000

    refused = [
        post(stranger(), "/lightning/invoice", {"amount_sats": 5, "padding": padding}),
        chat(key, messages=[{"role": "user", "content": padding}]),
    ]

    assert [answer.status_code for answer in refused] == [413, 413]
    assert Balance.objects.count() == 1 and not Sale.objects.exists()


def test_the_nodes_card_is_routstrs_info_with_its_npub_and_urls(owner: Any) -> None:
    from apps.identity import services as identity

    Listing.objects.create(urls=["http://abcdefgh.onion", "https://ai.example.org"])

    info = stranger().get("/v1/info").json()

    assert info["npub"] == identity.node_npub() and info["mints"] == []
    assert info["onion_url"] == "http://abcdefgh.onion"
    assert info["http_url"] == "https://ai.example.org"
    assert {"name", "description", "version"} <= set(info)


# A running node, the official `openai` client -------------------------------------------


@pytest.fixture(scope="module")
def selling_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Any]]:
    """A node (web and engine) selling the bundled model, its Lightning node a double in this
    process, and the stranger's node joined to it."""
    folder = tmp_path_factory.mktemp("selling")
    with (
        LightningdDouble(folder / "seller", alias="household") as seller,
        LightningdDouble(folder / "payer", alias="stranger") as payer,
    ):
        payer.connect(seller, amount_sat=1_000_000)
        (folder / "node").mkdir()
        node = Instance(folder / "node", SOVEREIGN_LIGHTNING_RPC=str(seller.rpc_file))
        node.run("web", "engine")
        try:
            node.wait_until("engine", "up", timeout=120)
            node.claim(Keys.generate())
            code = (
                "from apps.sharing.models import Offer; "
                f"Offer.objects.create(model={MODEL!r}, price_msat={PRICE_MSAT})"
            )
            made = node.manage("shell", "-c", code)
            assert made.returncode == 0, made.stderr
            yield node, payer
        finally:
            node.stop()


def http_json(method: str, url: str, body: Any = None, key: str = "") -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 (loopback)
        return json.loads(answer.read())


def key_bought_from(node: Instance, payer: LightningdDouble, sats: int) -> str:
    """Routstr's client steps: an invoice, paid, then its status until it carries the key."""
    made = http_json("POST", f"{node.url}/lightning/invoice", {"amount_sats": sats})
    payer.rpc.xpay(made["bolt11"])
    status = http_json("GET", f"{node.url}/lightning/invoice/{made['invoice_id']}/status")
    assert status["status"] == "paid"
    return str(status["api_key"])


def balance_at(node: Instance, key: str) -> int:
    return int(http_json("GET", f"{node.url}/v1/balance/info", key=key)["balance"])


@pytest.mark.processes
def test_the_official_client_buys_whole_and_streamed_answers_with_the_key(
    selling_node: tuple[Instance, LightningdDouble],
) -> None:
    node, payer = selling_node
    key = key_bought_from(node, payer, 10)
    client = openai.OpenAI(base_url=f"{node.url}/v1", api_key=key, max_retries=0, timeout=120)
    assert balance_at(node, key) == 10_000

    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    whole = raw.parse()
    cost = int(raw.headers["X-Routstr-Cost-Msats"])

    assert whole.choices[0].message.content and cost == PRICE_MSAT
    assert balance_at(node, key) == 10_000 - cost

    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = (chunks[-1].model_extra or {})["sovereign"]

    assert text and last["cost_msat"] == PRICE_MSAT
    assert balance_at(node, key) == last["balance_msat"] == 10_000 - 2 * PRICE_MSAT


@pytest.mark.processes
def test_the_official_client_is_told_a_short_balance_and_a_forged_key(
    selling_node: tuple[Instance, LightningdDouble],
) -> None:
    node, payer = selling_node
    key = key_bought_from(node, payer, 1)

    def ask(api_key: str) -> Any:
        client = openai.OpenAI(base_url=f"{node.url}/v1", api_key=api_key, max_retries=0)
        return client.chat.completions.create(model=MODEL, messages=QUESTION)  # type: ignore[arg-type]

    with pytest.raises(openai.APIStatusError) as short:
        ask(key)
    with pytest.raises(openai.AuthenticationError):
        ask("sk-" + "5" * 64)

    assert short.value.status_code == 402 and short.value.code == "insufficient_balance"
    numbers = {"balance": 1_000, "required": PRICE_MSAT, "shortfall": PRICE_MSAT - 1_000}
    assert short.value.response.json()["details"] == numbers
    assert balance_at(node, key) == 1_000


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_sovereigns_own_prepaid_client_buys_a_key_and_answers_from_this_node(
    selling_node: tuple[Instance, LightningdDouble], member: Any, settings: Any
) -> None:
    """Two nodes: this process is the buyer, its Lightning node the stranger's double; the
    running node sells. The provider row is written here because listing the offers at
    /v1/models for strangers is not part of this flow."""
    node, payer = selling_node
    settings.LIGHTNING_RPC = str(payer.rpc_file)
    settings.PROVIDER_TIMEOUT_SECONDS = 60
    provider = Provider.objects.create(
        name="seller",
        kind=Provider.Kind.PREPAID,
        base_url=node.url,
        timeout_seconds=60,
        max_price_msat=10_000,
        topup_msat=5_000,
    )
    ProviderModel.objects.create(provider=provider, model_id=MODEL, request_msat=PRICE_MSAT)
    asked = pipeline.AnswerRequest(
        member, pipeline.Origin.API, f"seller/{MODEL}", QUESTION, SAMPLING
    )

    before = {pay["payment_hash"] for pay in payer.rpc.listpays()["pays"]}

    text, end = pipeline.answer_sync(asked)
    again, end_again = pipeline.answer_sync(asked)

    assert isinstance(end, Done) and isinstance(end_again, Done), end
    assert text and again
    pays = payer.rpc.listpays()["pays"]
    paid = [pay for pay in pays if pay["payment_hash"] not in before]
    assert [(pay["status"], pay["amount_msat"]) for pay in paid] == [("complete", 5_000)]
    # The client asks for streams, which carry no cost header: the seller says what is left.
    key = sealing.unseal(Credential.objects.get(provider=provider).secret_sealed)
    assert balance_at(node, key) == 5_000 - 2 * PRICE_MSAT
