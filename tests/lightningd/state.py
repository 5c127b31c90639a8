"""What a double node knows, kept in memory and in a JSON file in its lightning-dir.

A node that restarts keeps its key, invoices, payments and channels, as lightningd keeps them in
its database; only the fault switches are forgotten.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import coincurve

STATE_FILE = "double-state.json"


@dataclass
class Invoice:
    """One `invoice`, with the fields `listinvoices` shows."""

    label: str
    bolt11: str
    payment_hash: str
    preimage: str
    payment_secret: str
    amount_msat: int | None
    description: str
    expires_at: int
    created_index: int
    paid: bool = False
    pay_index: int | None = None
    amount_received_msat: int | None = None
    paid_at: int | None = None
    updated_index: int | None = None

    def status(self, now: int) -> str:
        if self.paid:
            return "paid"
        return "expired" if now > self.expires_at else "unpaid"

    def listing(self, now: int) -> dict[str, Any]:
        """A `listinvoices` entry, keys in CLN's order (transcript, `listinvoices rec-1`)."""
        entry: dict[str, Any] = {
            "label": self.label,
            "bolt11": self.bolt11,
            "payment_hash": self.payment_hash,
        }
        if self.amount_msat is not None:
            entry["amount_msat"] = self.amount_msat
        entry["status"] = self.status(now)
        if self.paid:
            entry["pay_index"] = self.pay_index
            entry["amount_received_msat"] = self.amount_received_msat
            entry["paid_at"] = self.paid_at
            entry["payment_preimage"] = self.preimage
        entry["description"] = self.description
        entry["expires_at"] = self.expires_at
        entry["created_index"] = self.created_index
        if self.updated_index is not None:
            entry["updated_index"] = self.updated_index
        return entry


@dataclass
class SendPay:
    """One part of one attempt, as lightningd's `sendpay` table keeps it."""

    created_index: int
    payment_hash: str
    groupid: int
    partid: int
    destination: str
    amount_msat: int
    amount_sent_msat: int
    created_at: int
    bolt11: str
    label: str | None = None
    status: str = "pending"
    completed_at: int | None = None
    payment_preimage: str | None = None
    updated_index: int | None = None

    def listing(self) -> dict[str, Any]:
        """A `listsendpays` row, keys in `json_add_payment_fields` order (transcript)."""
        row: dict[str, Any] = {
            "created_index": self.created_index,
            "id": self.created_index,
            "payment_hash": self.payment_hash,
            "groupid": self.groupid,
        }
        if self.updated_index is not None:
            row["updated_index"] = self.updated_index
        row["partid"] = self.partid
        row["destination"] = self.destination
        row["amount_msat"] = self.amount_msat
        row["amount_sent_msat"] = self.amount_sent_msat
        row["created_at"] = self.created_at
        if self.completed_at is not None:
            row["completed_at"] = self.completed_at
        row["status"] = self.status
        if self.payment_preimage is not None:
            row["payment_preimage"] = self.payment_preimage
        if self.label is not None:
            row["label"] = self.label
        row["bolt11"] = self.bolt11
        return row


@dataclass
class Channel:
    """One channel as seen from this node; the peer keeps the mirror image."""

    peer_id: str
    peer_rpc_file: str
    channel_id: str
    funding_txid: str
    short_channel_id: str
    opener: str
    total_msat: int
    to_us_msat: int
    pushed_msat: int
    local_alias: str
    remote_alias: str
    opened_at: str
    min_to_us_msat: int = 0
    max_to_us_msat: int = 0
    private: bool = False  # not announced: reached only through invoices' route hints
    fee_base_msat: int = 1  # what we charge to forward out of this channel (`setchannel`)
    fee_ppm: int = 10
    htlcs: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class NodeState:
    secret: str
    alias: str
    blockheight: int
    onchain_txid: str
    onchain_msat: int
    invoices: list[Invoice] = field(default_factory=list)
    sendpays: list[SendPay] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    indexes: dict[str, int] = field(default_factory=dict)
    runes: list[str] = field(default_factory=list)  # createrune's, by unique id

    @classmethod
    def new(cls, alias: str, onchain_msat: int) -> NodeState:
        return cls(
            secret=coincurve.PrivateKey().secret.hex(),
            alias=alias,
            blockheight=108,
            onchain_txid=secrets.token_hex(32),
            onchain_msat=onchain_msat,
        )

    @property
    def node_id(self) -> str:
        key = coincurve.PrivateKey(bytes.fromhex(self.secret))
        return str(key.public_key.format().hex())

    def next_index(self, name: str) -> int:
        """lightningd's created/updated/pay indexes: 1, 2, 3... per kind."""
        self.indexes[name] = self.indexes.get(name, 0) + 1
        return self.indexes[name]

    def save(self, directory: Path) -> None:
        temporary = directory / (STATE_FILE + ".tmp")
        temporary.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        os.replace(temporary, directory / STATE_FILE)

    @classmethod
    def load(cls, directory: Path) -> NodeState | None:
        path = directory / STATE_FILE
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        saved["invoices"] = [Invoice(**entry) for entry in saved["invoices"]]
        saved["sendpays"] = [SendPay(**entry) for entry in saved["sendpays"]]
        saved["channels"] = [Channel(**entry) for entry in saved["channels"]]
        return cls(**saved)
