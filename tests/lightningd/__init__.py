"""A Core Lightning test double: the one double the product's tests may use.

It speaks lightningd's JSON-RPC over a unix socket as pyln-client 26.6.9 frames it, with the
methods, fields, codes and messages of CLN v26.06 (`data/cln-v26.06.6-transcript.json` holds the
recorded answers, and `test_double.py` replays every one against it), and real BOLT11 invoices
signed with the node's own secp256k1 key.

    LightningdDouble(directory, network="regtest", alias=..., routing_fee=RoutingFee(...))
        serves <directory>/<network>/lightning-rpc from a thread; `start()`/`stop()` or `with`.
        `.rpc` (a pyln-client), `.rpc_file`, `.node_id`, `.connect(other, amount_sat)`.
    ProcessDouble(...) the same, as its own process: `python -m tests.lightningd serve --dir D`.

Methods: getinfo, decode, xpay, pay, listpays, listsendpays, invoice, waitanyinvoice,
listinvoices, listfunds, listpeerchannels, setchannel, check, createrune, showrunes, checkrune
(real runes: `rune_methods.py`).

CLNRest (`rest.py`): `LightningdDouble(..., rest=True)` (or `ProcessDouble(..., rest=True)`)
also serves HTTPS on a free port of 127.0.0.1, `POST /v1/<method>` with a `Rune` header, with
the status codes and error bodies of Core Lightning's rest-plugin and the CA and certificates
cln-grpc makes in the lightning-dir (`certificates.py`): `.rest_url`, `.ca_file`. The fault
switches act on calls made there too. Two doubles with a channel pay
each other's invoices; balances move, the payee's invoice is paid, the payer's `listpays` has
the preimage. `connect(other, announce=False)` opens a private channel: `other`'s invoices
carry a route hint through it, and payments take two hops and pay the hop's fee
(`forwarding.py`; `data/cln-v26.06.6-issue-10.json` holds the answers issue 10's run got).

Faults (`faults.py`): `double.faults.next_xpay("pending_then_complete", after=2)`, and likewise
`failed_then_complete`, `held` (in flight until `double.release(payment_hash)`),
`already_paid`, `no_route`, `expired`, `drop(paid=...)`, and
`double.faults.next_call(method, "slow", seconds=...)` or `"drop"` for any method. A double in
another process takes the same switches through the `dev-double-fault` method on its socket
(`ProcessDouble.faults` sends it); see `control.py` for the `dev-double-*` methods.
"""

from tests.lightningd.double import LightningdDouble
from tests.lightningd.node import RoutingFee
from tests.lightningd.process import ProcessDouble

__all__ = ["LightningdDouble", "ProcessDouble", "RoutingFee"]
