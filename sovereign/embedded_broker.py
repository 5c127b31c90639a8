"""The embedded broker: kombu's filesystem transport, with each message written whole.

kombu's own transport creates a message's file under its final name and then writes into it,
while a worker may already be taking that file (it moves and reads every file with the
queue's name): it read an empty message, the worker died on it, and the message was lost. Here
a message is written under a name no queue reads and renamed into place once complete.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: what follows the first "." is never "<queue>.msg", so no reader takes it.
        partial = os.path.join(self.data_folder_out, f".partial-{name}")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as error:
            raise ChannelError(f"Cannot add a message to the broker's folder: {error}") from error


class Transport(filesystem.Transport):
    Channel = Channel
