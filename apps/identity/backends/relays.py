"""The node's only gateway to Nostr relays: NIP-17 DMs, kind-0 profiles, NIP-46 logins.

nostr-sdk's relay and signer calls are async only, and its uniffi glue ties each call to
the asyncio loop that awaits it. So one daemon thread owns one loop for the whole process,
and sync callers (Django views, Celery tasks) hand it coroutines and wait with a timeout.
`uniffi_set_event_loop` is never called: only Python callbacks need it, and once it is set
every call from another loop fails or crashes.

Every call uses its own short-lived `Client`: the relays come from the caller, a relay
that is down is skipped at once instead of being retried in the background, and nothing
stays connected between calls. Keys, events and gift wraps are sync and are built in the
caller's thread.

Sync only: from async code (Channels consumers) wrap these in `sync_to_async`, since they
block while relays answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Collection, Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from nostr_sdk import (
    Client,
    Event,
    EventBuilder,
    Filter,
    Keys,
    Kind,
    NostrConnect,
    NostrConnectUri,
    NostrSdkError,
    Proxy,
    PublicKey,
    RelayOptions,
    RelayUrl,
    ReqTarget,
    SendEventTarget,
    Tag,
    Timestamp,
    UnwrappedGift,
    nip59_make_gift_wrap,
)

from .base import (
    BunkerUriInvalid,
    DeliveryFailed,
    DeliveryResult,
    Profile,
    ReceivedMessage,
    RelayError,
    RelaysUnreachable,
    RemoteSignerError,
    RemoteSignerSession,
    SignerState,
    SignerStatus,
    TooManySessions,
)
from .pinning_proxy import PinningProxy, relay_endpoints

__all__ = [
    "BunkerUriInvalid",
    "DeliveryFailed",
    "DeliveryResult",
    "Profile",
    "Published",
    "ReceivedMessage",
    "RelayError",
    "RelayGateway",
    "RemoteSignerError",
    "RemoteSignerSession",
    "SignerStatus",
    "TooManySessions",
    "bunker_sign",
    "fetch_private_messages",
    "fetch_profile",
    "publish_events",
    "relays",
    "remote_signer_cancel",
    "remote_signer_start",
    "remote_signer_status",
    "send_private_message",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

APP_NAME = "Sovereign"
HTTP_AUTH_KIND = 27235
PRIVATE_MESSAGE_KIND = 14
GIFT_WRAP_KIND = 1059
# NIP-59 back-dates a gift wrap's created_at at random, up to two days, so that relays cannot
# tell when it was sent: a reader's window must reach back that far.
GIFT_WRAP_BACKDATING = timedelta(days=2)
MAX_GIFT_WRAPS_READ = 500
METADATA_KIND = 0
SIGNER_WAIT_SECONDS = 300.0  # how long a shown nostrconnect:// code waits for the phone
MAX_PENDING_SESSIONS = 50  # each pending login holds relay connections
FORGET_AFTER_SECONDS = 300.0  # finished logins stay this long for the page to poll
MAX_NAME_CHARS = 100
MAX_PICTURE_CHARS = 500
MAX_BUNKER_URI_CHARS = 2000
# The waiting thread gives a coroutine this long past its own timeout to clean up.
GRACE_SECONDS = 2.0


# --- the loop thread ------------------------------------------------------------------


class RelayGateway:
    """The process's loop thread plus the state of pending `nostrconnect://` logins."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="nostr-relays", daemon=True
        )
        self._thread.start()
        self.sessions = _SignerSessions()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` on the loop and wait for it; TimeoutError after `timeout` seconds."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Relay calls block, so they cannot run on the relay loop itself.")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            # Cancelling the task drops the Rust future, which closes its connections.
            future.cancel()
            raise

    def spawn(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Start `coro` on the loop without waiting for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)


_gateway: RelayGateway | None = None
_gateway_lock = threading.Lock()
_forked_after_use = False


def relays() -> RelayGateway:
    """The process's gateway, made on first use so importing this module starts nothing."""
    global _gateway
    with _gateway_lock:
        if _forked_after_use:
            # Verified: in such a child every nostr-sdk call just hangs until its timeout.
            raise RuntimeError(
                "nostr-sdk was used before this process forked, and its runtime threads do "
                "not survive a fork: make relay calls only in the forked workers."
            )
        if _gateway is None:
            _gateway = RelayGateway()
        return _gateway


def _after_fork_in_child() -> None:
    # The child inherits the gateway object but neither its loop thread nor nostr-sdk's
    # tokio threads (and maybe a held lock).
    global _gateway, _gateway_lock, _forked_after_use
    _forked_after_use = _forked_after_use or _gateway is not None
    _gateway = None
    _gateway_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- NIP-17 direct messages -----------------------------------------------------------


def send_private_message(
    sender_secret_hex: str,
    recipient_hex: str,
    text: str,
    relay_urls: Sequence[str],
    timeout: float = 10,
) -> DeliveryResult:
    """Gift-wrap `text` (kind 14 → seal 13 → wrap 1059) from the node to `recipient_hex`.

    Raises DeliveryFailed when no relay accepted it, ValueError for a bad key.
    """
    keys = _keys(sender_secret_hex)
    recipient = _public_key(recipient_hex)
    # Built by hand rather than with nip17_make_private_msg so the rumor id is known:
    # replies point at it with an `e` tag.
    rumor = (
        EventBuilder(Kind(PRIVATE_MESSAGE_KIND), text)
        .tags([Tag.public_key(recipient)])
        .finalize_unsigned(keys.public_key())
        .ensure_id()
    )
    wrap = nip59_make_gift_wrap(keys, recipient, rumor)
    urls, refused = _relay_urls(relay_urls)
    accepted: tuple[str, ...] = ()
    if urls:
        try:
            accepted, failed = relays().run(_publish(wrap, urls, timeout), timeout + GRACE_SECONDS)
        except TimeoutError:
            failed = {str(url): "timeout" for url in urls}
        refused.update(failed)
    result = DeliveryResult(
        message_id=str(rumor.id().to_hex()),
        wrap_id=str(wrap.id().to_hex()),
        accepted=accepted,
        refused=refused,
    )
    if not accepted:
        raise DeliveryFailed(_refusal_summary("No relay accepted the message", refused), result)
    return result


async def _publish(
    event: Event, urls: list[RelayUrl], timeout: float
) -> tuple[tuple[str, ...], dict[str, str]]:
    deadline = _Deadline(timeout)
    client = Client()
    try:
        connected, refused = await _connect(client, urls, deadline)
        if not connected:
            return (), refused
        out = await client.send_event(
            event, SendEventTarget.to(connected), ok_timeout=deadline.left()
        )
        refused.update({str(url): str(why) for url, why in out.failed.items()})
        return tuple(str(url) for url in out.success), refused
    except NostrSdkError as exc:
        return (), {str(url): _sdk_message(exc) for url in urls}
    finally:
        await client.shutdown()


@dataclass(frozen=True)
class Published:
    """One signed event sent to the relays: which took it, and why the others did not."""

    event_id: str
    accepted: tuple[str, ...]
    refused: dict[str, str]


def publish_events(
    events: Sequence[Event], relay_urls: Sequence[str], timeout: float = 10
) -> list[Published]:
    """Send events signed by the caller (announcements, deletions) to `relay_urls`, each
    within `timeout` seconds; a relay that is down or refuses is named, never raised."""
    urls, unusable = _relay_urls(relay_urls)
    published = []
    for event in events:
        refused = dict(unusable)
        accepted: tuple[str, ...] = ()
        if urls:
            try:
                accepted, failed = relays().run(
                    _publish(event, urls, timeout), timeout + GRACE_SECONDS
                )
            except TimeoutError:
                failed = {str(url): "timeout" for url in urls}
            refused.update(failed)
        published.append(Published(str(event.id().to_hex()), accepted, refused))
    return published


def fetch_private_messages(
    recipient_secret_hex: str,
    relay_urls: Sequence[str],
    since: int,
    skip: Collection[str] = (),
    timeout: float = 5,
) -> list[ReceivedMessage]:
    """The NIP-17 messages gift-wrapped to the key `recipient_secret_hex` that may have been
    sent at `since` (Unix seconds) or later, oldest first; wraps whose id is in `skip` are
    not opened again.

    A wrap that does not open, whose seal does not verify, or whose rumor is not a kind-14
    message by the seal's signer is left out. RelaysUnreachable when no relay could be asked
    in time (an outage is not "no messages"); a bad key raises ValueError.
    """
    keys = _keys(recipient_secret_hex)
    urls, _ = _relay_urls(relay_urls)
    if not urls:
        raise RelaysUnreachable("No usable relay is configured.")
    window_start = max(0, since - int(GIFT_WRAP_BACKDATING.total_seconds()))
    try:
        wraps = relays().run(
            _gift_wraps_to(keys.public_key(), window_start, urls, timeout),
            timeout + GRACE_SECONDS,
        )
    except (TimeoutError, NostrSdkError) as exc:
        raise RelaysUnreachable(f"No messages fetched: {_sdk_message(exc)}") from None
    opened = (_unwrapped(keys, wrap) for wrap in wraps if wrap.id().to_hex() not in skip)
    return sorted((message for message in opened if message), key=lambda m: m.sent_at)


async def _gift_wraps_to(
    recipient: PublicKey, window_start: int, urls: list[RelayUrl], timeout: float
) -> list[Event]:
    deadline = _Deadline(timeout)
    client = Client()
    try:
        connected, _ = await _connect(client, urls, deadline)
        if not connected:
            raise RelaysUnreachable("No relay could be reached.")
        wanted = (
            Filter()
            .kind(Kind(GIFT_WRAP_KIND))
            .pubkey(recipient)
            .since(Timestamp.from_secs(window_start))
            .limit(MAX_GIFT_WRAPS_READ)
        )
        target = ReqTarget.manual({url: [wanted] for url in connected})
        events = await client.fetch_events(target, deadline.left())
    finally:
        await client.shutdown()
    # As with profiles, a relay may send anything: keep only valid wraps addressed to us,
    # each once (several relays send the same wrap).
    addressed = ["p", recipient.to_hex()]
    kept = {
        event.id().to_hex(): event
        for event in events
        if event.kind().as_u16() == GIFT_WRAP_KIND
        and any(tag.to_vec()[:2] == addressed for tag in event.tags())
        and event.verify()
    }
    return list(kept.values())


def _unwrapped(keys: Keys, wrap: Event) -> ReceivedMessage | None:
    wrap_id = str(wrap.id().to_hex())
    try:
        # Decrypts the seal, checks its id and signature and that the rumor's author is the
        # seal's signer: the sender is whoever signed the seal, whatever the rumor says.
        gift = UnwrappedGift.from_gift_wrap(keys, wrap)
    except NostrSdkError as exc:
        log.info("gift wrap %s did not open: %s", wrap_id, _sdk_message(exc))
        return None
    rumor, sender = gift.rumor(), str(gift.sender().to_hex())
    if rumor.kind().as_u16() != PRIVATE_MESSAGE_KIND or rumor.author().to_hex() != sender:
        return None
    return ReceivedMessage(
        wrap_id=wrap_id,
        sender=sender,
        content=str(rumor.content()),
        sent_at=int(rumor.created_at().as_secs()),
    )


# --- kind-0 profiles ------------------------------------------------------------------


def fetch_profile(pubkey_hex: str, relay_urls: Sequence[str], timeout: float = 5) -> Profile | None:
    """The newest kind-0 profile of `pubkey_hex`, checked; None if the relays have none.

    RelaysUnreachable when no relay could be asked in time (an outage is not "no profile");
    a malformed key raises ValueError.
    """
    author = _public_key(pubkey_hex)
    urls, _ = _relay_urls(relay_urls)
    if not urls:
        raise RelaysUnreachable("No usable relay is configured.")
    try:
        content = relays().run(_newest_metadata(author, urls, timeout), timeout + GRACE_SECONDS)
    except (TimeoutError, NostrSdkError) as exc:
        raise RelaysUnreachable(f"No profile fetched: {_sdk_message(exc)}") from None
    return None if content is None else _profile(content)


async def _newest_metadata(author: PublicKey, urls: list[RelayUrl], timeout: float) -> str | None:
    deadline = _Deadline(timeout)
    client = Client()
    try:
        connected, _ = await _connect(client, urls, deadline)
        if not connected:
            raise RelaysUnreachable("No relay could be reached.")
        wanted = Filter().author(author).kind(Kind(METADATA_KIND)).limit(1)
        target = ReqTarget.manual({url: [wanted] for url in connected})
        events = await client.fetch_events(target, deadline.left())
    finally:
        await client.shutdown()
    # The client does not check answers against the filter by default: a relay could
    # send anyone's events, so keep only ones this key really signed.
    own = [
        event
        for event in events
        if event.kind().as_u16() == METADATA_KIND
        and event.author().to_hex() == author.to_hex()
        and event.verify()
    ]
    newest = max(own, key=lambda event: event.created_at().as_secs(), default=None)
    return None if newest is None else str(newest.content())


def _profile(content: str) -> Profile | None:
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    names = [_clean_name(data.get(field)) for field in ("name", "display_name", "displayName")]
    kept = tuple(dict.fromkeys(name for name in names if name))
    return Profile(
        name=kept[0] if kept else None,
        picture=_clean_picture(data.get("picture")),
        names=kept,
    )


def _clean_name(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    # Control characters and newlines would break page layouts and log lines.
    name = "".join(char for char in value if char.isprintable()).strip()
    return name[:MAX_NAME_CHARS].strip() or None


def _clean_picture(value: object) -> str | None:
    # Shown in <img src>, so only plain web URLs: no javascript:, data: or file: URLs.
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or len(url) > MAX_PICTURE_CHARS:
        return None
    if any(char.isspace() or not char.isprintable() for char in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


# --- NIP-46 remote signer login -------------------------------------------------------


def remote_signer_start(
    relay_urls: Sequence[str],
    tags: Sequence[Sequence[str]],
    wait: float = SIGNER_WAIT_SECONDS,
) -> RemoteSignerSession:
    """Start a `nostrconnect://` login; poll `remote_signer_status(session_id)`.

    In the background it waits up to `wait` seconds for a signer to scan `uri`, asks it
    for the user's key, then has it sign a kind-27235 event carrying `tags` (e.g. `u`,
    `method`, `challenge`). The caller must verify that event: the key a signer reports
    is only a claim.
    """
    urls, refused = _relay_urls(relay_urls)
    if not urls:
        raise ValueError(_refusal_summary("A nostrconnect:// login needs a relay", refused))
    checked = _checked_tags(tags)
    app_keys = Keys.generate()
    uri = _nostrconnect_uri(
        str(app_keys.public_key().to_hex()), [str(url) for url in urls], secrets.token_hex(16)
    )
    gateway = relays()
    session_id = gateway.sessions.add()
    task = gateway.spawn(_await_signer(gateway.sessions, session_id, uri, app_keys, checked, wait))
    gateway.sessions.attach(session_id, task)
    return RemoteSignerSession(session_id=session_id, uri=uri)


def remote_signer_status(session_id: str) -> SignerStatus:
    """("pending", None), ("signed", event JSON) or ("failed", a message to show)."""
    return relays().sessions.status(session_id)


def remote_signer_signed_at(session_id: str) -> int | None:
    """When the signed event reached the node (a phone may poll long after it signed)."""
    return relays().sessions.signed_at(session_id)


def remote_signer_cancel(session_id: str) -> None:
    """Stop waiting for a signer (the person left the page) and forget the session."""
    relays().sessions.cancel(session_id)


def _nostrconnect_uri(app_pubkey_hex: str, relay_urls: list[str], secret: str) -> str:
    # nostr-sdk's parser needs `metadata=` JSON and `secret=`; other signers read `name=`
    # and `perms=`. Both styles together suit every signer.
    query = [("relay", url) for url in relay_urls] + [
        ("secret", secret),
        ("metadata", json.dumps({"name": APP_NAME}, separators=(",", ":"))),
        ("name", APP_NAME),
        ("perms", f"sign_event:{HTTP_AUTH_KIND}"),
    ]
    return f"nostrconnect://{app_pubkey_hex}?{urlencode(query, quote_via=quote)}"


async def _await_signer(
    sessions: _SignerSessions,
    session_id: str,
    uri: str,
    app_keys: Keys,
    tags: list[list[str]],
    wait: float,
) -> None:
    try:
        # The signer's `connect` reply must carry our secret; nostr-sdk checks that.
        signer = NostrConnect(NostrConnectUri.parse(uri), app_keys, timedelta(seconds=wait), None)
        event_json = await asyncio.wait_for(_signed_event(signer, tags), wait)
    except (TimeoutError, RelayError, NostrSdkError) as exc:
        sessions.finish(session_id, "failed", _signer_failure(exc, wait))
    except Exception:  # the session must still end, or the login page polls forever
        log.exception("nostrconnect login %s crashed", session_id)
        sessions.finish(session_id, "failed", "The login failed on the server.")
    else:
        sessions.finish(session_id, "signed", event_json)


@dataclass
class _Session:
    started: float
    state: SignerState = "pending"
    detail: str | None = None
    finished: float | None = None
    signed_at: int | None = None  # wall-clock seconds, for the signed event's time window
    task: concurrent.futures.Future[None] | None = None


class _SignerSessions:
    """Pending and recently finished logins; touched by web threads and the loop thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    def add(self) -> str:
        with self._lock:
            self._forget_finished()
            pending = sum(s.state == "pending" for s in self._sessions.values())
            if pending >= MAX_PENDING_SESSIONS:
                raise TooManySessions("Too many logins are waiting for a signer; try again soon.")
            session_id = secrets.token_urlsafe(24)
            self._sessions[session_id] = _Session(started=time.monotonic())
            return session_id

    def attach(self, session_id: str, task: concurrent.futures.Future[None]) -> None:
        with self._lock:
            if session_id in self._sessions:
                self._sessions[session_id].task = task

    def finish(self, session_id: str, state: SignerState, detail: str) -> None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.state == "pending":
                session.state, session.detail = state, detail
                session.finished = time.monotonic()
                session.signed_at = int(time.time()) if state == "signed" else None

    def status(self, session_id: str) -> SignerStatus:
        with self._lock:
            self._forget_finished()
            session = self._sessions.get(session_id)
            if session is None:
                return ("failed", "This login has expired; start again.")
            return (session.state, session.detail)

    def signed_at(self, session_id: str) -> int | None:
        with self._lock:
            session = self._sessions.get(session_id)
            return session.signed_at if session is not None else None

    def cancel(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None and session.task is not None:
            session.task.cancel()

    def _forget_finished(self) -> None:
        now = time.monotonic()
        for session_id, session in list(self._sessions.items()):
            if session.finished is not None and now - session.finished > FORGET_AFTER_SECONDS:
                del self._sessions[session_id]


def bunker_sign(
    bunker_uri: str,
    tags: Sequence[Sequence[str]],
    timeout: float = 60,
    trusted_relays: Collection[str] = (),
) -> str:
    """Have the signer of a pasted `bunker://` address sign a kind-27235 event with `tags`.

    Its relays are dialled through the pinning proxy: public addresses only, checked at the
    moment of connecting, except `trusted_relays` (the owner's own). Returns the signed event
    JSON, for the caller to verify. Raises BunkerUriInvalid (a ValueError) for an unusable
    address, RemoteSignerError when the signer refuses or does not answer within `timeout`
    seconds.
    """
    uri = _bunker_uri(bunker_uri)
    checked = _checked_tags(tags)
    trusted = relay_endpoints(trusted_relays)
    try:
        return relays().run(
            _sign_with_bunker(uri, checked, timeout, trusted), timeout + GRACE_SECONDS
        )
    except (TimeoutError, NostrSdkError) as exc:
        raise RemoteSignerError(_signer_failure(exc, timeout)) from None


_pinning_proxy = PinningProxy(set())  # served on the relays' own loop once first needed


async def _sign_with_bunker(
    uri: NostrConnectUri, tags: list[list[str]], timeout: float, trusted: set[tuple[str, int]]
) -> str:
    _pinning_proxy.configured = trusted
    options = RelayOptions().proxy(Proxy.all(await _pinning_proxy.start()))
    # Fresh app keys each time: the node keeps no standing connection to anyone's signer.
    signer = NostrConnect(uri, Keys.generate(), timedelta(seconds=timeout), options)
    return await asyncio.wait_for(_signed_event(signer, tags), timeout)


def _bunker_uri(text: str) -> NostrConnectUri:
    text = text.strip()
    if len(text) > MAX_BUNKER_URI_CHARS:
        raise BunkerUriInvalid("That bunker:// address is too long.")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise BunkerUriInvalid("That is not a bunker:// address.") from None
    if parts.scheme.lower() != "bunker":
        raise BunkerUriInvalid("A signer address starts with bunker:// (copy it from the signer).")
    if len(parts.netloc) != 64 or any(c not in "0123456789abcdefABCDEF" for c in parts.netloc):
        raise BunkerUriInvalid("The bunker:// address must name the signer's 64-hex-digit key.")
    if not parse_qs(parts.query).get("relay"):
        raise BunkerUriInvalid(
            "The bunker:// address names no relay=, so the signer is unreachable."
        )
    try:
        return NostrConnectUri.parse(text)
    except NostrSdkError as exc:
        raise BunkerUriInvalid(
            f"The bunker:// address is not valid: {_sdk_message(exc)}."
        ) from None


async def _signed_event(signer: NostrConnect, tags: list[list[str]]) -> str:
    # On nostrconnect:// this first waits for the signer to scan the code and connect.
    user = await signer.get_public_key_async()
    if user is None:
        raise RemoteSignerError("The signer did not say which key it signs for.")
    unsigned = (
        EventBuilder(Kind(HTTP_AUTH_KIND), "")
        .tags([Tag.parse(tag) for tag in tags])
        .finalize_unsigned(user)
    )
    event = await signer.sign_event_async(unsigned)
    # Cheap early check so a broken signer shows as "failed"; the caller still verifies.
    if event is None or not event.verify() or event.author().to_hex() != user.to_hex():
        raise RemoteSignerError("The signer answered with an event that does not verify.")
    return str(event.as_json())


def _signer_failure(exc: BaseException, waited: float) -> str:
    message = str(exc) if isinstance(exc, RelayError) else _sdk_message(exc)
    if isinstance(exc, TimeoutError) or message == "timeout":
        return f"The signer did not answer within {waited:g} seconds."
    if isinstance(exc, RelayError):
        return message
    return f"The signer refused or failed: {message}."


# --- small shared helpers -------------------------------------------------------------


class _Deadline:
    """One time budget shared by the connect, send and fetch steps of a call."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> timedelta:
        # Never zero: nostr-sdk treats a zero duration as "do not even try".
        return timedelta(seconds=max(0.1, self._end - time.monotonic()))


async def _connect(
    client: Client, urls: list[RelayUrl], deadline: _Deadline
) -> tuple[list[RelayUrl], dict[str, str]]:
    """Connect to `urls`; returns the connected ones and why the others failed.

    try_connect (unlike connect) leaves no background retry behind for a dead relay; the
    callers then target only connected relays, since a dead one in the target would make
    a send or fetch wait for its whole timeout.
    """
    for url in urls:
        await client.add_relay(url)
    out = await client.try_connect(deadline.left())
    return list(out.success), {str(url): str(why) for url, why in out.failed.items()}


def _relay_urls(texts: Sequence[str]) -> tuple[list[RelayUrl], dict[str, str]]:
    """Parsed, de-duplicated relay URLs, and the reason each unusable one was dropped."""
    urls: dict[str, RelayUrl] = {}
    bad: dict[str, str] = {}
    for text in texts:
        try:
            url = RelayUrl.parse(text.strip())
        except NostrSdkError as exc:
            bad[text] = f"not a relay URL ({_sdk_message(exc)})"
        else:
            urls.setdefault(str(url), url)
    return list(urls.values()), bad


def _checked_tags(tags: Sequence[Sequence[str]]) -> list[list[str]]:
    checked = [list(tag) for tag in tags]
    for tag in checked:
        if not tag or not all(isinstance(part, str) for part in tag):
            raise ValueError(f"A tag must be a non-empty list of strings, not {tag!r}.")
    return checked


def _keys(secret_hex: str) -> Keys:
    try:
        return Keys.parse(secret_hex)
    except NostrSdkError:
        raise ValueError("The node's secret key is not valid.") from None  # never echo it


def _public_key(pubkey_hex: str) -> PublicKey:
    try:
        return PublicKey.parse(pubkey_hex)
    except NostrSdkError:
        raise ValueError(f"{pubkey_hex!r} is not a Nostr public key.") from None


def _sdk_message(exc: BaseException) -> str:
    # nostr-sdk errors print as "'the reason'", quotes included.
    return str(exc).strip().strip("'\"")


def _refusal_summary(headline: str, refused: dict[str, str]) -> str:
    if not refused:
        return f"{headline}: no relay is configured."
    reasons = "; ".join(f"{url}: {why}" for url, why in refused.items())
    return f"{headline} ({reasons})."
