"""Reading a provider's small JSON documents (its model list, its price manifest): bounded in
size, no redirects, nothing from the environment's proxy settings."""

from __future__ import annotations

import json
from typing import Any

import httpx2


class FetchFailed(Exception):
    """The document could not be had; the message says why, for people."""

    def __init__(
        self, message: str, status: int | None = None, *, unreachable: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable


def json_fetched(url: str, *, headers: dict[str, str], timeout: float, limit: int) -> Any:
    """The JSON at `url`, read no further than `limit` bytes."""
    try:
        with (
            httpx2.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise FetchFailed(f"answered {response.status_code}", response.status_code)
            raw = bytearray()
            for part in response.iter_bytes():
                raw += part
                if len(raw) > limit:
                    raise FetchFailed("is too large")
    except httpx2.HTTPError as error:
        raise FetchFailed(str(error) or type(error).__name__, unreachable=True) from None
    try:
        return json.loads(raw)
    except ValueError:
        raise FetchFailed("is not JSON") from None
